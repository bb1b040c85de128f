"""What a training step reads: examples, batches, masks, text embeddings, and its randomness."""
