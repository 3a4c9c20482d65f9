"""Scale-out of the model stages over a Ray cluster (generation and judging).

Importing this package does not import Ray; `prefdata.distributed.ray_generate` does,
inside its functions.
"""
