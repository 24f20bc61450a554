"""One module per API resource: route, feedback, intents, health (+ metrics)."""
