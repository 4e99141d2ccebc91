"""Regenerate tests/fixtures/minilm_reference.json: sentence-transformers' own vectors for ~30 texts.

The fixture pins what ``SONY_RAG_EMBEDDINGS=local`` (numpy, no torch) must reproduce: tests/unit/test_embeddings.py
asserts a cosine of at least 0.9999 with each of these. It needs sentence-transformers and torch, which the
project's extras do not install for this; in a throwaway or developer venv:

    pip install -e '.[st]'          # sentence-transformers, torch (a CPU wheel if you have one) and the weights
    python scripts/make_embedding_fixture.py

Run it again only when the texts below change: the reference is sentence-transformers, not our runtime.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "minilm_reference.json"

LONG_PRODUCT = (
    "The Hallwyl three-seat sofa pairs a solid oak frame with a deep bouclé seat and feather-wrapped cushions. "
    "Each frame is joined by hand in our Porto workshop, finished with a hard-wax oil, and checked twice before "
    "it is wrapped. The covers zip off for cleaning; spare covers come in six colours. "
)

TEXTS = [
    # short and ordinary
    "sofa",
    "A solid oak dining table that seats six.",
    "How long does shipping take to Lisbon?",
    "Can I return a sofa after 30 days?",
    "walnut sideboard with brass handles",
    "Q: Do you ship abroad?\nA: We deliver across the EU; shipping is free above 500 EUR.",
    "SKU SX-1123, 220 x 95 x 82 cm, 1,899.00 USD",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    # empty-ish
    "",
    " ",
    ".",
    "\n\t  \n",
    "?!",
    # longer than 256 tokens: truncated the way sentence-transformers truncates
    LONG_PRODUCT * 6,
    "word " * 600,
    "Supercalifragilisticexpialidocious-antidisestablishmentarianism " * 80,
    LONG_PRODUCT * 3,  # about 200 tokens: under the limit, on the same text
    # accents and other scripts
    "Café crème brûlée à la française, très élégant.",
    "Größe des Esstischs: über zwei Meter, Eiche geölt.",
    "¿Dónde está la tienda más cercana? Envío gratis en España.",
    "東京のショールームでソファを試せますか？",
    "这张橡木餐桌可以坐六个人。",
    "이 소파는 언제 배송되나요?",
    "Диван из дуба с бесплатной доставкой",
    "أريد طاولة طعام من خشب البلوط",
    "Ελληνικά γράμματα και έπιπλα",
    # emoji and mixed
    "🛋️😀👍",
    "Love this sofa 😍 — 10/10 would buy again!!!",
    "<p>Oak <b>table</b> &amp; chairs</p>",
    "naïve coöperation façade résumé",
]


def main() -> int:
    """Compute the vectors with sentence-transformers and write the fixture; return an exit code."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from sony_rag.embeddings import local_model_path

    model = SentenceTransformer(local_model_path(), device="cpu", local_files_only=True)
    vectors = model.encode(TEXTS, batch_size=8, normalize_embeddings=True, convert_to_numpy=True)
    tokens = [len(ids) for ids in model.tokenizer(TEXTS, truncation=False)["input_ids"]]
    payload = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_seq_length": model.max_seq_length,
        "made_with": {"sentence-transformers": sentence_transformers.__version__, "torch": torch.__version__},
        "regenerate": "python scripts/make_embedding_fixture.py",
        "cases": [{"text": text, "tokens_untruncated": count, "vector": [round(float(x), 7) for x in vector]}
                  for text, count, vector in zip(TEXTS, tokens, vectors, strict=True)],
    }
    FIXTURE.write_text(json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {FIXTURE} ({len(TEXTS)} texts, {FIXTURE.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
