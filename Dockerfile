# The app image for docker-compose.yml (CPU torch; the LLM runs in the TGI container).
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt '.[weaviate]'
ENV HF_HUB_OFFLINE=1
CMD ["domainroute", "--help"]
