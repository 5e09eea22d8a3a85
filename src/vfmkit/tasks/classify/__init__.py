"""Image classification: a linear head on a foundation backbone (linear probe, partial or full fine-tuning)."""
