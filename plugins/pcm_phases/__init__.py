"""Built-in PCM components: phase segmenters, variance proxies and budget samplers."""
