# One image for every Digits service; compose.yaml picks the command (web, worker, train).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall torch. The default PyPI torch wheel
# for Linux x86-64 carries the CUDA libraries the GPU workers need.
COPY pyproject.toml README.md ./
RUN mkdir -p digits_site classifier frontend \
    && touch digits_site/__init__.py classifier/__init__.py frontend/__init__.py \
    && pip install . \
    && pip uninstall -y digits \
    && rm -rf digits_site classifier frontend

COPY manage.py ./
COPY digits_site ./digits_site
COPY classifier ./classifier
COPY frontend ./frontend
# Editable: the code (and the shipped weights) stay under /app, where the commands run.
RUN pip install --no-deps -e .

RUN useradd --create-home --uid 1000 digits \
    && mkdir -p /data \
    && chown -R digits /app/classifier/weights /data
USER digits

EXPOSE 8000
CMD ["python", "manage.py", "runstack", "--only", "web", "--host", "0.0.0.0", "--port", "8000"]
