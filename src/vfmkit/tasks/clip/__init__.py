"""The CLIP task: zero-shot classification, retrieval, embeddings and contrastive fine-tuning."""
