# One image for every Distillery process. Multi-stage: dependencies are built in `build`, the runtime
# image holds only the virtualenv and the code, and runs as a non-root user.
#
#   docker build -t distillery .                                   # CPU torch
#   docker build -t distillery:gpu --build-arg TORCH_SPEC="torch>=2.6,<3" \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .   # CUDA torch for GPU workers
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_SPEC="torch>=2.6,<3"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" --extra-index-url https://pypi.org/simple "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY distillery ./distillery
RUN pip install .

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --create-home --uid 10001 distillery && mkdir /runs && chown distillery /runs
COPY --from=build /opt/venv /opt/venv
COPY examples /opt/distillery/examples
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    DISTILLERY_MODEL_ROOTS=/models:/data:/opt/distillery/examples
USER distillery
WORKDIR /home/distillery
ENTRYPOINT ["distillery"]
CMD ["--help"]
