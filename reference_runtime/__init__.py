"""The model side: GGUF loading, exact dequantization, architectures, the fp64 reference, the basket."""
