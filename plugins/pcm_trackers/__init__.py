"""Built-in trackers: MLflow (the default), TensorBoard and Weights & Biases."""
