"""The routing service: FastAPI app, routing policy, request/feedback store, metrics, CLI."""
