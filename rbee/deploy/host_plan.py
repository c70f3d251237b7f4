"""Everything that ends up on one host, decided once: the typed host plan.

``plan_host(spec, host, facts, ...)`` turns the validated spec, the host's probed facts and the
sizes of its models into a ``HostPlan``: what the host must offer (RAM, disk), the engine feature
set, the placed workers and their ports, and every config and unit as rendered text with its path
and mode, plus what each service starts from (its restart inputs). The three front ends only
translate a plan into their own operations:

- the pyinfra deploy (``rbee/deploys/``): ``files.put`` of each file, restart on a changed digest;
- the Ansible roles (``rbee.deploy.ansible_steps.plan_hosts``): the same plan as JSON, copied;
- ``rbee up`` (``rbee.local.plan``): the files written under the run folder, services started.

No I/O here: reading API keys or model files is the caller's job.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from rbee.deploy import launchd
from rbee.deploy.cluster_ca import CA_CERT_NAME, TLS_CERT_NAME, TLS_KEY_NAME, HostTls
from rbee.deploy.engine_plan import host_features
from rbee.deploy.layout import (
    API_KEYS_FILE,
    API_KEYS_NAME,
    CLUSTER_SECRET_NAME,
    CONFIG_DIR,
    CREDENTIALS_DIR,
    DATA_DIR,
    HIVE_CREDENTIAL_NAME,
    LAUNCH_DAEMONS_DIR,
    MACOS_DATA_DIR,
    MACOS_LOG_DIR,
    WORKER_CREDENTIAL_NAME,
    WORKERS_DIR,
    HostLayout,
)
from rbee.deploy.macos import metal_problems
from rbee.deploy.probe import HostFacts, Requirements, judge
from rbee.deploy.templates import (
    HiveConfig,
    HiveModel,
    HivePlacement,
    QueenConfig,
    UnitSettings,
    WorkerSettings,
    render_hive,
    render_queen,
    render_unit,
    render_worker,
    service_command,
    worker_args,
)
from rbee.engine.cuda import PYPI_CUDA, RUNTIME_LIB_DIR
from rbee.engine.features import EngineBackend, FeatureSet
from rbee.spec.inventory import queen_url
from rbee.spec.models import ClusterSpec, HostSpec
from rbee.spec.placement import assign, models_on
from rbee_runtime.common.credentials import hive_credential, worker_credential
from rbee_runtime.common.ports import WORKER_PORT_FIRST
from rbee_runtime.common.tls import https

MODEL_RAM_FACTOR = 1.2
"""A host needs size × this of RAM per placed model, plus its reserve."""

DISK_MARGIN_BYTES = 512 * 1024**2
"""Free disk a host needs beyond its models."""

DEFAULT_CTX_SIZE = 2048
"""The hive's context size when no model is placed on its host."""

QUEEN_UNIT = "rbee-queen.service"
HIVE_UNIT = "rbee-hive.service"
WORKER_UNIT = "rbee-worker@.service"
UNIT_DIR = "/etc/systemd/system"

ServiceManager = Literal["systemd", "launchd"]


@dataclass(frozen=True)
class Target:
    """How the services run: as systemd units on a deployed host, or as ``rbee up``'s processes here.

    ``placed_workers``: ``units`` (``rbee-worker@`` instances that outlive the hive) or ``hive``
    (children the hive starts and supervises). ``model_paths``: model id → file, when the files are
    not in the install prefix (``rbee up`` runs them where they are). ``api_keys``: the queen reads its
    keys from ``file`` (a path) or ``env`` (a variable name); ``None`` when the spec sets none.
    ``service_manager``: how the ``units`` run: systemd units (Linux) or launchd daemons (macOS,
    ``rbee.deploy.launchd``: one plist per service, the placed workers included).
    ``credentials_dir``: where the internal plane's credentials (and the queen's keys file, under systemd)
    are kept, 0600; under systemd each service gets its own through ``LoadCredential=`` and its config
    names ``$CREDENTIALS_DIRECTORY/<name>``, elsewhere the configs name the files themselves.
    """

    python: str
    config_dir: str
    workers_dir: str
    data_dir: str
    bind_host: str
    placed_workers: Literal["units", "hive"]
    model_paths: Mapping[str, str] | None = None
    api_keys_file: str | None = None
    api_keys_env: str | None = None
    service_manager: ServiceManager = "systemd"
    credentials_dir: str = CREDENTIALS_DIR

    @property
    def loads_credentials(self) -> bool:
        """True when systemd hands the services their credentials (``LoadCredential=``)."""
        return self.placed_workers == "units" and self.service_manager == "systemd"

    def credential_ref(self, name: str) -> str:
        """How a config names the credential ``name``: systemd's credentials folder, else the file itself."""
        return f"${{CREDENTIALS_DIRECTORY}}/{name}" if self.loads_credentials else f"{self.credentials_dir}/{name}"


def deployed_target(
    layout: HostLayout, bind_host: str, api_keys: bool, service_manager: ServiceManager = "systemd"
) -> Target:
    """A host deployed by pyinfra or Ansible: units, configs in ``/etc/rbee``, keys in a file there.

    ``launchd`` (macOS): the same configs, the state in ``/usr/local/var/rbee`` (``rbee.deploy.layout``).
    """
    return Target(
        python=layout.python,
        config_dir=CONFIG_DIR,
        workers_dir=WORKERS_DIR,
        data_dir=MACOS_DATA_DIR if service_manager == "launchd" else DATA_DIR,
        bind_host=bind_host,
        placed_workers="units",
        api_keys_file=API_KEYS_FILE if api_keys else None,
        service_manager=service_manager,
        credentials_dir=CREDENTIALS_DIR if service_manager == "systemd" else f"{MACOS_DATA_DIR}/credentials",
    )


@dataclass(frozen=True)
class PlannedWorker:
    """One placed worker: the systemd instance ``rbee-worker@<name>`` and its settings."""

    name: str
    worker_id: str
    model_id: str
    port: int
    slots: int
    device: str
    model_path: str
    ctx_size: int
    device_index: int
    #: The model is an embedding model (``--embedding``).
    embedding: bool = False

    @property
    def unit(self) -> str:
        return f"rbee-worker@{self.name}.service"

    @property
    def label(self) -> str:
        """Its launchd daemon on a macOS host: ``org.rbee.worker.<name>``."""
        return launchd.worker_label(self.name)


@dataclass(frozen=True)
class PlannedFile:
    """A file the plan puts on the host: owned by root, group the service user, ``mode`` octal.

    ``label``: how plans and logs name it (``hive config``, ``unit rbee-hive.service``); a ``secret``
    file's text never shows in a plan (mode 600: under systemd only root reads it, and hands it to its
    service; ``owner`` the service user where the service reads it itself, as under launchd).
    """

    path: str
    text: str
    label: str
    mode: str = "640"
    secret: bool = False
    owner: str = "root"

    @property
    def group(self) -> str | None:
        """Its group when not the service user's: ``wheel`` for a launchd plist (launchd refuses any other)."""
        return launchd.PLIST_GROUP if self.path.startswith(f"{LAUNCH_DAEMONS_DIR}/") else None


@dataclass(frozen=True)
class PlannedService:
    """A service and what it starts from: it restarts when the digest of its inputs changes.

    ``unit``: the systemd unit, or on a macOS host the launchd label (``org.rbee.hive``).
    ``inputs``: the texts of its config and unit (plist); ``models``: the ids whose checksums count;
    ``secret``: the credentials and keys it starts with (they restart it when they change, and never show
    in a plan).
    """

    unit: str
    inputs: tuple[str, ...]
    models: tuple[str, ...] = ()
    secret: str = ""

    def digest(self, release: str, model_sha256: Mapping[str, str]) -> str:
        """The digest a running service is stamped with (``release``: runtime and engine identity)."""
        extra = (self.secret, *sorted(model_sha256[m] for m in self.models))
        return hashlib.sha256("\0".join((*self.inputs, release, *extra)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class HostPlan:
    """Everything that ends up on one host (see the module docstring).

    ``service_manager``: ``launchd`` on a macOS host: ``files`` holds plists, ``units`` is empty and
    ``services`` are keyed by launchd label.
    """

    cluster: str
    host: str
    roles: tuple[str, ...]
    service_user: str
    layout: HostLayout
    backend: EngineBackend
    gpu_indices: tuple[int, ...]
    features: FeatureSet
    requirements: Requirements
    problems: tuple[str, ...]
    queen_url: str
    hive_url: str
    models: tuple[str, ...]
    workers: tuple[PlannedWorker, ...]
    files: tuple[PlannedFile, ...] = field(default=())
    units: tuple[str, ...] = field(default=())
    services: tuple[PlannedService, ...] = field(default=())
    service_manager: ServiceManager = "systemd"

    @property
    def is_queen(self) -> bool:
        return "queen" in self.roles

    def file(self, path: str) -> PlannedFile:
        """The planned file at ``path``."""
        return next(f for f in self.files if f.path == path)


def cuda_library_path(python: str, features: FeatureSet) -> str:
    """Where a host's CUDA runtime and cuBLAS are, for the library path its services get (CUDA from PyPI only).

    The engine's libraries find them only through the library path (their RUNPATH is ``$ORIGIN``).
    """
    if features.backend != "cuda" or features.cuda != PYPI_CUDA:
        return ""
    venv = python.rsplit("/bin/", 1)[0]
    return f"{venv}/lib/python{features.python}/site-packages/{RUNTIME_LIB_DIR}"


def hive_peers(spec: ClusterSpec, host: HostSpec) -> list[str]:
    """The addresses a hive may talk to (``IPAddressAllow=``; all else denied): this host, the queen's host.

    Its only peers are the queen (spawns, heartbeats) and its own workers (on this host); the control
    machine never calls a hive. Empty (no IP filtering) unless both addresses are IP literals: a name would
    have to be resolved, and a stale answer would cut the hive off.
    """
    addresses = ["127.0.0.1" if h.is_local else h.address for h in (host, spec.queen_host)]
    try:
        peers = [str(ipaddress.ip_address(a)) for a in addresses]
    except ValueError:
        return []
    return list(dict.fromkeys(peers))


def worker_settings(plan: HostPlan, worker: PlannedWorker, target: Target) -> WorkerSettings:
    """What a placed worker starts with (its env file under systemd, its arguments under launchd)."""
    return WorkerSettings(
        worker_id=worker.worker_id,
        model_id=worker.model_id,
        model_path=worker.model_path,
        bind_host=target.bind_host,
        port=worker.port,
        slots=worker.slots,
        ctx_size=worker.ctx_size,
        backend=plan.backend,
        device=worker.device_index,
        hive_url=plan.hive_url,
        embedding=worker.embedding,
    )


def requirements(spec: ClusterSpec, host: HostSpec, model_bytes: Mapping[str, int]) -> Requirements:
    """What a host must offer, given the sizes of the models placed on it (unknown sizes count 0)."""
    total = sum(model_bytes.get(model_id, 0) for model_id in models_on(spec, host.name))
    return Requirements(
        backend=host.backend,
        gpus=host.gpus,
        min_ram_bytes=int(total * MODEL_RAM_FACTOR) + int(host.reserve.ram),
        min_disk_bytes=total + DISK_MARGIN_BYTES,
    )


def cuda_device(device: str, gpus: list[int] | str) -> int:
    """The GPU index a worker uses: ``cuda:N`` → N, else the host's first listed GPU (0 for ``all``)."""
    if device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    return gpus[0] if isinstance(gpus, list) and gpus else 0


def placed_workers(
    spec: ClusterSpec, host: HostSpec, backend: str, model_path: Mapping[str, str]
) -> tuple[PlannedWorker, ...]:
    """The placed workers of a host: ``<model>-<n>``, ports from 7840 up in placement order."""
    seen: dict[str, int] = {}
    out = []
    mine = [a for a in assign(spec) if a.host == host.name]
    for index, placed in enumerate(mine):
        seen[placed.model_id] = seen.get(placed.model_id, 0) + 1
        name = f"{placed.model_id}-{seen[placed.model_id]}"
        out.append(
            PlannedWorker(
                name=name,
                worker_id=f"{host.name}-{name}",
                model_id=placed.model_id,
                port=WORKER_PORT_FIRST + index,
                slots=placed.slots,
                device=placed.device,
                model_path=model_path[placed.model_id],
                ctx_size=spec.model(placed.model_id).context,
                device_index=cuda_device(placed.device, host.gpus) if backend == "cuda" else 0,
                embedding=spec.model(placed.model_id).embedding,
            )
        )
    return tuple(out)


def plan_host(
    spec: ClusterSpec,
    host_name: str,
    facts: HostFacts,
    target: Target,
    model_bytes: Mapping[str, int] | None = None,
    api_keys_text: str | None = None,
    cluster_secret: str | None = None,
    tls: HostTls | None = None,
) -> HostPlan:
    """The plan of one host (see the module docstring).

    ``model_bytes``: size of each model file (for the RAM/disk requirement; missing ones count 0).
    ``api_keys_text``: the queen's keys, one per line, when they go into a file on the host.
    ``cluster_secret``: the internal plane's secret (``rbee.deploy.cluster_secret``); the host gets what it
    needs of it (the queen the secret, a hive its credential and its workers' one). None: an open plane.
    ``tls``: the host's certificate, key and the cluster CA (``rbee.deploy.cluster_ca``); its services serve
    HTTPS and every URL is ``https://``. None: plain HTTP.
    """
    host = spec.host(host_name)
    layout = HostLayout(spec.deploy.prefix)
    backend = facts.backend_for(host.backend)
    gpu_indices = tuple(host.gpus) if isinstance(host.gpus, list) else tuple(g.index for g in facts.gpus)
    needs = requirements(spec, host, model_bytes or {})
    model_ids = tuple(models_on(spec, host.name))
    paths = {m: (target.model_paths or {}).get(m) or layout.model_path(m) for m in model_ids}
    workers = placed_workers(spec, host, backend, paths)
    features, engine_problems = host_features(facts, backend, spec.deploy.llama_cpp_python, gpu_indices)
    if backend == "metal":  # unified memory: the models must fit what Metal may use, not only the RAM
        need = int(sum((model_bytes or {}).get(m, 0) for m in model_ids) * MODEL_RAM_FACTOR)
        engine_problems = [*engine_problems, *metal_problems(facts.ram_total_bytes, need)]
    is_queen = host.name == spec.queen_host.name
    hive_url = https(f"http://{target.bind_host}:{host.hive.port}", tls)
    plan = HostPlan(
        cluster=spec.cluster,
        host=host.name,
        roles=("queen", "hive") if is_queen else ("hive",),
        service_user=spec.deploy.service_user,
        layout=layout,
        backend=backend,
        gpu_indices=gpu_indices,
        features=features,
        requirements=needs,
        problems=(*judge(facts, needs), *engine_problems),
        queen_url=https(queen_url(spec), tls),
        hive_url=hive_url,
        models=model_ids,
        workers=workers,
        service_manager=target.service_manager,
    )
    return _with_files(plan, spec, host, target, paths, api_keys_text, cluster_secret, tls)


def plan_deployed_host(
    spec: ClusterSpec,
    host_name: str,
    facts: HostFacts,
    model_bytes: Mapping[str, int] | None = None,
    api_keys_text: str | None = None,
    cluster_secret: str | None = None,
    tls: HostTls | None = None,
) -> HostPlan:
    """The plan of a host deployed by pyinfra or Ansible: services bound to its spec address.

    systemd units, or launchd daemons when the facts say macOS (``os`` ``Darwin``).
    """
    host = spec.host(host_name)
    bind = "127.0.0.1" if host.is_local else host.address
    manager: ServiceManager = "launchd" if facts.os == "Darwin" else "systemd"
    target = deployed_target(HostLayout(spec.deploy.prefix), bind, api_keys=api_keys_text is not None,
                             service_manager=manager)  # fmt: skip
    return plan_host(spec, host_name, facts, target, model_bytes, api_keys_text, cluster_secret, tls)


def _with_files(
    plan: HostPlan,
    spec: ClusterSpec,
    host: HostSpec,
    target: Target,
    model_paths: Mapping[str, str],
    api_keys_text: str | None,
    cluster_secret: str | None,
    tls: HostTls | None = None,
) -> HostPlan:
    """Render the plan's configs, units and credential files, and what each service starts from."""
    units_here = target.placed_workers == "units"
    files: list[PlannedFile] = []
    services: list[PlannedService] = []
    owner = spec.deploy.service_user if target.service_manager == "launchd" else "root"
    hive_cred = hive_credential(cluster_secret, host.name) if cluster_secret else None
    workers_cred = worker_credential(hive_cred) if hive_cred else None

    def credential(name: str, text: str, label: str) -> str:
        """Plan a credential file; return how a config names it."""
        files.append(PlannedFile(f"{target.credentials_dir}/{name}", text + "\n", label, "600", True, owner))
        return target.credential_ref(name)

    tls_files: dict[str, str] = {}
    tls_secret = ""  # a renewed certificate restarts the services that serve it
    if tls is not None:
        tls_files = {
            "tls_cert_file": credential(TLS_CERT_NAME, tls.cert.strip(), "TLS certificate"),
            "tls_key_file": credential(TLS_KEY_NAME, tls.key.strip(), "TLS key"),
        }
        files.append(PlannedFile(f"{target.credentials_dir}/{CA_CERT_NAME}", tls.ca_cert, "cluster CA", "644",
                                 owner=owner))  # fmt: skip
        tls_files["tls_ca_file"] = target.credential_ref(CA_CERT_NAME)
        tls_secret = tls.ca_cert + tls.cert + tls.key

    unit = UnitSettings(
        cluster=spec.cluster,
        host=host.name,
        python=target.python,
        service_user=spec.deploy.service_user,
        config_dir=target.config_dir,
        workers_dir=target.workers_dir,
        data_dir=target.data_dir,
        backend=plan.backend,
        gpu_indices=list(plan.gpu_indices),
        loading_timeout=spec.runtime.loading_timeout,
        library_path=cuda_library_path(target.python, plan.features),
        credentials_dir=target.credentials_dir,
        internal=cluster_secret is not None,
        hive_peers=hive_peers(spec, host) if units_here else [],
        api_keys_file=(target.api_keys_file or "") if api_keys_text and target.loads_credentials else "",
        tls=tls is not None,
        log_format=spec.runtime.log_format,
    )
    if plan.is_queen:
        keys_file = target.api_keys_file if api_keys_text or not units_here else None
        if api_keys_text and keys_file:
            files.append(PlannedFile(keys_file, api_keys_text, "queen API keys", "600", True, owner))
            if target.loads_credentials:
                keys_file = target.credential_ref(API_KEYS_NAME)
        secret_file = credential(CLUSTER_SECRET_NAME, cluster_secret, "cluster secret") if cluster_secret else None
        queen = render_queen(
            QueenConfig(
                cluster=spec.cluster,
                bind_host=target.bind_host,
                port=spec.queen.port,
                api_keys_env=target.api_keys_env,
                api_keys_file=keys_file,
                cluster_secret_file=secret_file,
                heartbeat_interval=spec.runtime.heartbeat_interval,
                stale_timeout=spec.runtime.stale_timeout,
                loading_timeout=spec.runtime.loading_timeout,
                queue_max=spec.queen.queue_max,
                **tls_files,
            )
        )
        files.append(PlannedFile(f"{target.config_dir}/queen.yaml", queen, "queen config"))
        queen_secret = (api_keys_text or "") + (cluster_secret or "") + tls_secret
        if units_here and target.service_manager == "launchd":
            services.append(PlannedService(launchd.QUEEN_LABEL, (queen,), secret=queen_secret))
        elif units_here:
            text = render_unit(QUEEN_UNIT, unit)
            files.append(PlannedFile(f"{UNIT_DIR}/{QUEEN_UNIT}", text, f"unit {QUEEN_UNIT}", mode="644"))
            services.append(PlannedService(QUEEN_UNIT, (queen, text), secret=queen_secret))

    hive_cred_file = credential(HIVE_CREDENTIAL_NAME, hive_cred, "hive credential") if hive_cred else None
    if workers_cred and units_here:  # placed workers are units (daemons) of their own: they need it too
        credential(WORKER_CREDENTIAL_NAME, workers_cred, "worker credential")
    models = [spec.model(m) for m in plan.models]
    hive = render_hive(
        HiveConfig(
            host=host.name,
            bind_host=target.bind_host,
            advertise_host=target.bind_host,
            port=host.hive.port,
            queen_url=plan.queen_url,
            credential_file=hive_cred_file,
            data_dir=target.data_dir,
            backend=plan.backend,
            devices=list(plan.gpu_indices) if plan.backend == "cuda" else [],
            max_workers=host.hive.max_workers,
            ctx_size=max((m.context for m in models), default=DEFAULT_CTX_SIZE),
            ram_reserve_bytes=int(host.reserve.ram),
            heartbeat_interval=spec.runtime.heartbeat_interval,
            worker_idle_timeout=spec.runtime.worker_idle_timeout,
            loading_timeout=spec.runtime.loading_timeout,
            worker_command=[target.python, "-m", "rbee_runtime.worker"],
            worker_port_first=max((w.port + 1 for w in plan.workers), default=WORKER_PORT_FIRST)
            if units_here
            else WORKER_PORT_FIRST,
            models=[HiveModel(m.id, m.source, model_paths[m.id], m.sha256, m.embedding) for m in models],
            placements=[] if units_here else [HivePlacement(w.model_id, w.slots) for w in plan.workers],
            **tls_files,
        )
    )
    hive_file = f"{target.config_dir}/hive.yaml" if units_here else f"{target.config_dir}/hive-{host.name}.yaml"
    files.append(PlannedFile(hive_file, hive, "hive config"))
    if not units_here:
        return replace(plan, files=tuple(files))
    if target.service_manager == "launchd":
        return _with_daemons(plan, spec.deploy.service_user, target, files, services, hive, hive_cred, workers_cred,
                             tls_secret)  # fmt: skip
    hive_unit = render_unit(HIVE_UNIT, unit)
    worker_unit = render_unit(WORKER_UNIT, unit)
    files += [
        PlannedFile(f"{UNIT_DIR}/{HIVE_UNIT}", hive_unit, f"unit {HIVE_UNIT}", mode="644"),
        PlannedFile(f"{UNIT_DIR}/{WORKER_UNIT}", worker_unit, f"unit {WORKER_UNIT}", mode="644"),
    ]
    services.append(PlannedService(HIVE_UNIT, (hive, hive_unit), plan.models, secret=(hive_cred or "") + tls_secret))
    for worker in plan.workers:
        env = render_worker(worker_settings(plan, worker, target))
        files.append(PlannedFile(f"{target.workers_dir}/{worker.name}.env", env, f"worker {worker.name} config"))
        secret = (workers_cred or "") + tls_secret
        services.append(PlannedService(worker.unit, (env, worker_unit), (worker.model_id,), secret=secret))
    units = tuple(u for u in (QUEEN_UNIT, HIVE_UNIT, WORKER_UNIT) if plan.is_queen or u != QUEEN_UNIT)
    return replace(plan, files=tuple(files), units=units, services=tuple(services))


def _daemon(service: launchd.Service, label: str, user: str, target: Target, program: list[str]) -> PlannedFile:
    """The plist of one launchd daemon, as a planned file (root:wheel, 644: launchd's rule)."""
    job = launchd.LaunchdJob(
        service=service,
        label=label,
        user=user,
        group=user,
        program=program,
        environment={"HOME": target.data_dir},  # what systemd's User= sets; launchd daemons get no HOME
        working_directory=target.data_dir,
        log_file=launchd.log_path(label, MACOS_LOG_DIR),
    )
    path, text = launchd.plist_path(label), launchd.render_plist(job)
    return PlannedFile(path, text, f"launchd {label}", launchd.PLIST_MODE)


def _with_daemons(
    plan: HostPlan,
    user: str,
    target: Target,
    files: list[PlannedFile],
    services: list[PlannedService],
    hive: str,
    hive_cred: str | None,
    workers_cred: str | None,
    tls_secret: str = "",
) -> HostPlan:
    """A macOS host: the queen (``services`` holds it, on its host, still without its plist), the hive and
    each placed worker as launchd daemons. A worker's settings are its plist's ``ProgramArguments``
    (launchd reads no environment file, so no ``workers/<name>.env`` is written).
    """
    python, config_dir = target.python, target.config_dir
    daemons: list[PlannedFile] = []
    planned: list[PlannedService] = []
    if plan.is_queen:
        (queen_service,) = services
        queen = _daemon("queen", launchd.QUEEN_LABEL, user, target, service_command("queen", python, config_dir))
        daemons.append(queen)
        planned.append(replace(queen_service, inputs=(*queen_service.inputs, queen.text)))
    hive_daemon = _daemon("hive", launchd.HIVE_LABEL, user, target, service_command("hive", python, config_dir))
    daemons.append(hive_daemon)
    hive_secret = (hive_cred or "") + tls_secret
    planned.append(PlannedService(launchd.HIVE_LABEL, (hive, hive_daemon.text), plan.models, secret=hive_secret))
    credential = ["--credential-file", target.credential_ref(WORKER_CREDENTIAL_NAME)] if workers_cred else []
    if tls_secret:
        for kind, name in (("cert", TLS_CERT_NAME), ("key", TLS_KEY_NAME), ("ca", CA_CERT_NAME)):
            credential += [f"--tls-{kind}-file", target.credential_ref(name)]
    for worker in plan.workers:
        settings = worker_settings(plan, worker, target)
        program = [python, "-m", "rbee_runtime.worker", *worker_args(settings), *credential]
        daemon = _daemon("worker", worker.label, user, target, program)
        daemons.append(daemon)
        secret = (workers_cred or "") + tls_secret
        planned.append(PlannedService(worker.label, (daemon.text,), (worker.model_id,), secret=secret))
    return replace(plan, files=(*files, *daemons), units=(), services=tuple(planned))
