# The lava side image: Python 3.10 + lava-dl/lava-nc + dagster-pipes, nothing of the Dagster stack.
# PipesK8sClient starts one pod per neuromorphic script (`python -m models.neuromorphic.pipes_*`),
# with the work directory (a ReadWriteMany volume, PLATFORMQ_LAVA_WORKDIR_CLAIM) mounted at
# PLATFORMQ_LAVA_WORKDIR. Build from the repository root:
#   docker build -f infra/lava.Dockerfile -t platformq/lava:TAG .
FROM python:3.10-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_COMPILE_BYTECODE=1 PYTHONPATH=/opt/platformq
RUN pip install --no-cache-dir uv
WORKDIR /opt/platformq

# The same lock file `make setup` installs into .venv-lava (torch 2.3.1, numpy < 2, lava-dl 0.6.0)
COPY requirements/lava.txt requirements/lava.txt
RUN uv pip install --system --no-cache -r requirements/lava.txt

# Only the lava-side code: the model package (no Dagster, no platform services)
COPY models/__init__.py models/__init__.py
COPY models/neuromorphic models/neuromorphic

# Pods run as this user (runAsNonRoot in the pod spec)
RUN useradd --uid 1000 --create-home lava
USER 1000
CMD ["python", "-c", "import lava.lib.dl.netx, dagster_pipes; print('lava side ready')"]
