"""The sections of a run configuration, one pydantic model each (BoomConfig in __init__ puts them
together). Each field's docstring says what it does and why its default is what it is."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from boom_ray.config.constants import BUNDLED_MINILM
from boom_ray.config.units import check_folder_name, parse_size


def _known_method(name: str) -> str:
    """`name` if merge/methods registers it (the one registry), else ValueError. Imported on the
    first merge method validated: config/ is imported by every command, `boom --help` included."""
    from boom_ray.merge.methods import known_method  # lazy: numpy and the merge maths, for merge configs only

    return known_method(name)


MethodName = Annotated[str, AfterValidator(_known_method)]
"""A merge method name, checked against the one registry."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(Strict):
    path: str
    """Directory (nested folders allowed) or single file of FlagEmbedding JSONL / Parquet; local path or URI."""
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    max_bad_fraction: float = Field(0.0, ge=0.0, le=1.0)
    """Fail the stage when more than this fraction of rows is bad (after writing the quarantine)."""
    include: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    """Globs on task names (fnmatch): only `include` matches (default all) minus `exclude` matches are read."""


class BaggingConfig(Strict):
    ratios: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0], min_length=1)
    seed: int = 42
    nested: bool = False
    """False (default): every bag is an independent stratified sample, which is what gives bagging
    its diversity. True: each smaller bag is a subset of every larger one."""
    num_cpus: float = Field(1.0, gt=0)
    """Logical CPUs per Ray Data task that reads, validates and samples one source file."""
    chunk_rows: int = Field(8192, ge=16)
    """Rows parsed, validated and written at a time; bounds memory per task."""
    strategy: Literal["random", "task", "cluster"] = "random"
    """random: a bag per ratio (BOOM); task: a model per task or per group of `groups`; cluster: a
    model per group of `groups` or per computed cluster of tasks (boom_ray/corpus/groups.py)."""
    groups: dict[str, list[str]] | None = None
    """Group name -> globs on task names (task and cluster strategies)."""
    num_clusters: int = Field(4, ge=1)
    cluster_sample: int = Field(256, ge=1)
    """Computed clusters (no `groups`): how many, from how many queries per task."""

    @field_validator("groups")
    @classmethod
    def _groups_valid(cls, groups: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for name, globs in (groups or {}).items():
            check_folder_name(name, "group name")
            if not globs:
                raise ValueError(f"group {name!r} has no task globs")
        return groups

    @field_validator("ratios")
    @classmethod
    def _ratios_valid(cls, ratios: list[float]) -> list[float]:
        for r in ratios:
            if not 0.0 < r <= 1.0:
                raise ValueError(f"each ratio must be in (0, 1], got {r}")
        if len(set(ratios)) != len(ratios):
            raise ValueError(f"ratios must be distinct, got {ratios}")
        return sorted(ratios)


class LoraConfig(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None


class ModelConfig(Strict):
    name_or_path: str = BUNDLED_MINILM
    """A Hugging Face model directory (or hub id where a hub is reachable), or `builtin:all-MiniLM-L6-v2`."""
    pooling: Literal["last", "mean", "cls"] = "last"
    normalize: bool = True
    query_template: str = "Instruct: {instruction}\nQuery: {query}"
    default_instruction: str = "Given a query, retrieve relevant passages that answer the query"
    max_query_length: int = Field(512, ge=8)
    max_doc_length: int = Field(512, ge=8)
    lora: LoraConfig | None = None
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """dtype training loads the base weights in: they become the optimizer's master weights, so
    float32 (default) whatever the checkpoint stores (Qwen3 ships bf16, and transformers 5 would
    load it as bf16); bf16/fp16 compute copies come from DeepSpeed's mixed precision. `auto`:
    the stored dtype."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel passed to from_pretrained; flash_attention_2 needs a GPU and the
    flash-attn package."""

    @field_validator("query_template")
    @classmethod
    def _template_has_fields(cls, template: str) -> str:
        if "{query}" not in template:
            raise ValueError("query_template must contain {query}")
        return template


class TrainConfig(Strict):
    bags: list[str] | None = None
    """Which bags to train (names such as bag20); default: every bag of the run."""
    global_batch_size: int = Field(256, ge=1)
    group_size: int = Field(8, ge=1)
    """Passages per query: 1 positive + (group_size - 1) hard negatives."""
    temperature: float = Field(0.02, gt=0.0)
    cross_device_negatives: bool = True
    learning_rate: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    lr_schedule: Literal["linear", "cosine"] = "linear"
    """Decay after warmup: linear or cosine, to 0 at the last step."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    gradient_checkpointing: bool = True
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on GPU, fp32 on CPU."""
    deepspeed_config: str | None = None
    """Path to a DeepSpeed JSON that replaces the generated one."""
    checkpoint_every: int = Field(100, ge=1)
    num_workers: int = Field(1, ge=1)
    """Ray Train workers per bag."""
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)
    max_failures: int = Field(1, ge=0)
    seed: int = 42
    log_every: int = Field(10, ge=1)
    max_concurrent_bags: int | None = Field(None, ge=1)
    """Bags whose trainers are submitted at once; default: all of them. Never sized from the
    cluster's current resources: on an autoscaling cluster the pending trainers are what make
    the autoscaler add nodes."""
    schedule: Literal["shuffled", "sequential", "two_stage"] = "shuffled"
    """Order of global batches (data/batch_plan.py): shuffled (BOOM), sequential, two_stage."""
    kd_loss: Literal["kl_div", "m3_kd"] | None = None
    """Distillation from the rows' pos_scores/neg_scores (FlagEmbedding's kd_loss_type); None: off."""
    kd_temperature: float = Field(1.0, gt=0.0)
    """Teacher targets are softmax(teacher scores / kd_temperature); 1.0 is FlagEmbedding's softmax."""
    matryoshka_dims: list[int] | None = None
    matryoshka_weights: list[float] | None = None
    """The loss summed over embeddings truncated to these sizes, renormalised (weights default 1)."""
    mask_false_negatives: bool = True
    """Mask in-batch candidates whose text equals the row's positive (other rows' copies of it)."""

    @model_validator(mode="after")
    def _matryoshka_valid(self) -> "TrainConfig":
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        if dims is not None and (not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims)):
            raise ValueError(f"matryoshka_dims must be distinct positive sizes, got {dims}")
        if weights is not None and (dims is None or len(weights) != len(dims) or any(w < 0 for w in weights)):
            raise ValueError(f"matryoshka_weights needs one non-negative weight per matryoshka dim, got {weights}")
        return self
    mini_batch_size: int | None = Field(None, ge=1)
    """GradCache rows per mini-batch (train/grad_cache.py; ds_config.check_mini_batch_size); None: off."""


class MergeSpec(Strict):
    name: str
    """Output name: the merged model goes to `<workdir>/merges/<name>/`."""
    method: MethodName = "multislerp"
    weights: dict[str, float] | None = None
    """Weight per bag name; default: the bag's ratio (0.2 ... 1.0, normalised by the method)."""
    base_model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


class MergeConfig(Strict):
    merges: list[MergeSpec] = Field(default_factory=lambda: [MergeSpec(name="multislerp")])
    memory_budget: int = Field(default=parse_size("1GiB"))
    max_shard_size: int = Field(default=parse_size("5GB"))
    num_cpus: float = Field(1.0, gt=0)
    threads: int | None = Field(None, ge=1)
    """Worker threads that compute a merge; default: OMP_NUM_THREADS where set (Ray sets it from a
    task's num_cpus), else the CPUs this process may use."""
    memory: int | None = None
    """Bytes of memory the Ray merge task reserves; default: twice the memory budget."""
    copy_files_from: str | None = None
    """Model whose config, tokenizer and sentence-transformers files the output takes; default: the first."""

    @field_validator("memory_budget", "max_shard_size", "memory", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        return None if value is None else parse_size(value)


class SuiteRef(Strict):
    path: str
    domain: Literal["in", "out"] | None = None
    """Overrides suite.json's domain."""
    instruction: str | None = None


class EvalConfig(Strict):
    suites: list[SuiteRef] = Field(default_factory=list)
    dev_suites: list[SuiteRef] = Field(default_factory=list)
    batch_size: int = Field(64, ge=1)
    num_encoders: int = Field(1, ge=1)
    """Size of the Ray Data actor pool that embeds big corpora."""
    encoder_cpus: float = Field(1.0, gt=0)
    encoder_gpus: float = Field(0.0, ge=0)
    ray_min_texts: int = Field(2048, ge=0)
    """Inputs of at least this many texts are embedded by the Ray Data actor pool; smaller ones in-process."""
    dims: list[int] | None = None
    """Also score every suite at these truncated embedding sizes (Matryoshka; renormalised)."""
    prompts: Literal["declared", "model", "none"] = "declared"
    """How the report, sweeps and updates prompt queries (`boom_ray.eval.prompts`): declared (the
    suite's instruction, else the model's own prompt), model (the model's own prompt only) or none
    (queries as they are: for encoders trained without instructions, such as MiniLM)."""
    cache_dir: str | None = None
    """A folder of evaluation results shared by several runs, one file per model and evaluation
    fingerprint, looked up when the run's own `<workdir>/eval/` has no current entry (`boom run
    --repeats N` sets it to `<workdir>/eval-cache`, so the base model is evaluated once)."""


class SweepConfig(Strict):
    num_samples: int = Field(8, ge=1)
    search: Literal["grid", "random", "optuna", "hyperopt"] = "random"
    weight_range: tuple[float, float] = (0.1, 1.0)
    weight_grid: list[float] | None = None
    methods: list[MethodName] = Field(default_factory=lambda: ["multislerp"])
    objective: str = "ood_mean/ndcg@10"
    mode: Literal["max", "min"] = "max"
    max_concurrent: int | None = Field(None, ge=1)
    trial_cpus: float = Field(1.0, gt=0)
    keep_trial_models: bool = False
    """Also write each trial's merged model into its trial folder (trials merge in memory otherwise)."""
    scheduler: Literal["fifo", "asha"] = "fifo"
    """asha: score each trial on a sample of the dev suites first and stop the worse ones early."""
    sample_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    """With asha: the fraction of each dev suite a trial is scored on first."""
    asha_reduction_factor: int = Field(2, ge=2)
    """With asha: 1 in this many trials is scored in full."""


class UpdateConfig(Strict):
    """`boom update`: the run's `corpus` is the NEW data; this section names what came before."""

    current_model: str
    """The model to update (a boom-ray / sentence-transformers model directory)."""
    old_corpus: str
    """The corpus the current model was trained on."""
    history_ratio: float = Field(0.4, gt=0.0, le=1.0)
    """Fraction of the old corpus, stratified by task, mixed into the update's training data."""
    merge_weights: tuple[float, float] | None = None
    """(current, update) multislerp weights; default: the old and new corpora's sizes in millions
    of rows (2.8 and 4.3 in the reference)."""


class RayConfig(Strict):
    address: str | None = None
    """Ray cluster address; default: the RAY_ADDRESS environment variable where set, else a fresh
    local Ray for this process (never a cluster that `ray start` runs on this machine)."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of a local Ray started by boom-ray; default: all."""
    cluster_config: str | None = None
    """The Ray cluster launcher YAML of the cluster (e.g. cluster.yaml): its node types are what
    resource requests are checked against before any work starts (an autoscaling cluster's
    running nodes say nothing about what it can start). Without it, a local Ray's own nodes are."""
    verbose: bool = False
    """Stream Ray's and the workers' output to the console (per-step lines, Ray's own logs) as
    Ray does by default, instead of the live view and `<workdir>/logs/` (`--verbose`)."""

