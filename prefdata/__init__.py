"""prefdata: preference-pair datasets with provenance, and a DPO/IPO trainer."""

__version__ = "0.1.0"
