# syntax=docker/dockerfile:1
# One image for every Distillery process: `distillery api`, `distillery worker`, the one-shot
# `alembic upgrade head`, and `distillery compress`. docker-compose.yml runs them all (docs/cluster.md).
#
#   docker build -t distillery:latest .                                    # CPU torch: api and CPU workers
#   docker build -t distillery:latest-gpu \
#       --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .   # CUDA torch: GPU workers
#
# TORCH_INDEX is the only difference between the two: the API image never carries CUDA. The CUDA
# wheels bring their own CUDA libraries; the host needs the NVIDIA driver and container toolkit.
#
# Multi-stage: `build` creates the virtualenv (with pip's caches and build tools), `runtime` copies the
# virtualenv and the code and runs as an unprivileged user. Nothing secret is baked in: the database
# and broker URLs come from the environment at run time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC="torch>=2.6,<3"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, alone, from the index that decides its build (CPU or a CUDA version). The pin written
# to /opt/venv/constraints.txt keeps the next step from swapping it for PyPI's build. DL3013 (pin
# versions): the version is the build argument TORCH_SPEC, a range as in pyproject.toml.
# hadolint ignore=DL3013
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}" \
    && pip freeze | grep -i '^torch==' > /opt/venv/constraints.txt

# The code lives at /opt/distillery, laid out as in the repository: the service finds alembic.ini and
# migrations/ beside app/ (app/db/migrate.py), and `alembic upgrade head` runs from this directory.
WORKDIR /opt/distillery

# The dependencies, read from pyproject.toml, in their own layer: a code change does not reinstall them.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --constraint /opt/venv/constraints.txt --requirement /tmp/requirements.txt

COPY README.md alembic.ini ./
COPY migrations ./migrations
COPY app ./app
COPY worker ./worker
COPY distillery ./distillery
COPY examples ./examples
# Editable install: the `distillery` command, with the packages imported from /opt/distillery (where
# alembic.ini and migrations/ are), not copied into site-packages. Bytecode is compiled here because
# the runtime user cannot write to /opt/distillery.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps --editable . \
    && python -m compileall -q --invalidation-mode checked-hash app worker distillery migrations


FROM ${PYTHON_IMAGE} AS runtime
# A fixed uid, so that a shared data directory (a named volume, or NFS for workers on other machines)
# can be owned by it. The data directory exists in the image, owned by that user, so that a fresh named
# volume mounted there starts out writable.
RUN useradd --no-log-init --create-home --uid 10001 --user-group distillery \
    && install -d -o distillery -g distillery /var/lib/distillery
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/distillery /opt/distillery
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DISTILLERY_DATA_DIR=/var/lib/distillery \
    HF_HOME=/var/lib/distillery/huggingface \
    HF_HUB_OFFLINE=1
WORKDIR /opt/distillery
# numeric, so that a runtime checking runAsNonRoot can verify it without reading /etc/passwd
USER 10001:10001
EXPOSE 8000
# No HEALTHCHECK here: the same image runs the API, workers and one-shot commands, each healthy in a
# different way; docker-compose.yml gives each long-running service its own check.
CMD ["distillery", "--help"]
