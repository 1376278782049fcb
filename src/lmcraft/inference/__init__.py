"""Using a saved model: the Predictor and the ahead-of-time compiled packages of classifiers."""
