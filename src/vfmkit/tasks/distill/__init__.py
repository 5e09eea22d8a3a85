"""Domain adaptation by distillation: a student backbone learns one or many frozen teachers from unlabeled images."""
