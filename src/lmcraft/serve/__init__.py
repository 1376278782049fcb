"""Serving a fine-tuned model: ahead-of-time compiled predictors."""
