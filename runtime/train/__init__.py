"""Training support for dslrun: data sets, batching and the training loop."""
