"""Text towers and tokenizers for CLIP-style models."""
