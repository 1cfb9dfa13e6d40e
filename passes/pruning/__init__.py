"""Weight pruning: unstructured magnitude, N:M semi-structured and structured channel pruning."""
