"""The Transformer, the sharing strategies that tie its weights, exact parameter
accounting and decoding."""
