"""The naive baseline: a plain transformers model behind FastAPI, one forward pass per request.

What a team writes first: no engine, no batching across requests, the model called inside the
handler (FastAPI runs sync handlers in its threadpool). `benchmarks/serve.py` loads it with wrk.

Run:  python benchmarks/naive_server.py MODEL_DIR PORT
"""

import sys
from pathlib import Path

from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Query(BaseModel):  # module level: FastAPI must resolve the body model's annotation
    text: str


def main() -> None:
    import uvicorn
    from fastapi import FastAPI

    from training.modeling import load_classifier
    from training.predict import predict_proba

    model_dir, port = sys.argv[1], int(sys.argv[2])
    model, tokenizer = load_classifier(model_dir)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    app = FastAPI()

    @app.post("/v1/route")
    def route(query: Query) -> dict[str, object]:
        probs = predict_proba(model, tokenizer, [query.text], max_length=64, progress=False)[0]
        best = int(probs.argmax())
        return {"intent": labels[best], "confidence": float(probs[best])}

    @app.get("/livez")
    def livez() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
