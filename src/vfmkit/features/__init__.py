"""Feature extraction that trains nothing: embeddings, PCA pictures, k-NN probes and the demo."""
