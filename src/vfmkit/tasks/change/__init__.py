"""Change detection (Visual ChangeNet): Siamese change segmentation and golden-vs-test classification."""
