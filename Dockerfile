# One image for every antihack role; compose picks the role by command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY proto ./proto
COPY models ./models
COPY migrations ./migrations
ARG EXTRAS=""
RUN pip install --no-cache-dir -e ".${EXTRAS}"
RUN useradd --system --uid 10001 antihack && mkdir -p /data && chown antihack /data
USER antihack
ENV ANTIHACK_DATA_DIR=/data
EXPOSE 8000
CMD ["antihack", "api", "--host", "0.0.0.0", "--port", "8000"]
