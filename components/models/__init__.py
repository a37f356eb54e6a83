"""The sequence model: the item tower, the causal encoder and the heads, and what feeds them."""
