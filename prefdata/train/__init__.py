"""Training: preference losses, the DPO/IPO training loop and its report."""
