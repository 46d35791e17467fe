"""Optimizer and schedule: the recipe's parameter groups and LR curve, and one optimizer step of our Accelerate
path (micro-batches through `accelerator.accumulate`, clip, AdamW) against plain PyTorch on the whole batch."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from configuration_gpt2repro import GPT2ReproConfig
from modeling_gpt2repro import GPT2ReproForCausalLM
from training.optim import build_adamw, count_params, lr_at, param_groups, set_lr

RECIPE = SimpleNamespace(max_lr=6e-4, min_lr=6e-5, warmup_steps=715, max_steps=19073, lr_decay_steps=None,
                         weight_decay=0.1, beta1=0.9, beta2=0.95, adam_eps=1e-8, fused_adamw="auto")


def test_param_groups_124m_match_nanogpt():
    """nanoGPT prints for GPT-2 124M (vocab 50304): 50 decayed tensors with 124,354,560 parameters,
    98 non-decayed tensors with 121,344 parameters."""
    with torch.device("meta"):
        model = GPT2ReproForCausalLM(GPT2ReproConfig())
    decay, no_decay = param_groups(model, 0.1)
    assert (len(decay["params"]), len(no_decay["params"])) == (50, 98)
    assert count_params(model) == (124_354_560, 121_344)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    # the tied lm_head is the embedding, counted once
    assert sum(p is model.transformer.wte.weight for p in decay["params"]) == 1


def test_lr_schedule_recipe_values():
    lr = lambda s: lr_at(s, RECIPE)  # noqa: E731
    assert lr(0) == pytest.approx(6e-4 / 715)  # step 0 already moves
    assert lr(714) == pytest.approx(6e-4)  # end of warmup
    assert lr(715) == pytest.approx(6e-4)  # cosine starts at the peak
    assert lr(715 + (19073 - 715) // 2) == pytest.approx((6e-4 + 6e-5) / 2, rel=1e-4)  # half way: the mean
    assert lr(19073) == pytest.approx(6e-5) and lr(30000) == pytest.approx(6e-5)  # flat after the decay
    after = [lr(s) for s in range(715, 19074, 97)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # monotone decay
    assert all(6e-5 <= v <= 6e-4 for v in after)


@pytest.fixture
def fresh_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def _tiny(seed=0):
    torch.manual_seed(seed)
    return GPT2ReproForCausalLM(GPT2ReproConfig(n_layer=2, n_head=2, n_embd=64, n_positions=128))


@pytest.mark.parametrize("loss_chunk_tokens", [0, 12], ids=["full-logits-loss", "chunked-loss"])
def test_accumulated_accelerate_step_equals_plain_big_batch_step(fresh_accelerate, loss_chunk_tokens, monkeypatch):
    """4 micro-batches of 2 through our train_step == one batch of 8 with torch.optim.AdamW: the loss scaling,
    the sync on the last micro-step, clipping and both parameter groups all line up. Also with the fused chunked
    loss (12 tokens per chunk: 32-token micro-batches end on a partial chunk) against the plain batch's
    full-logits loss. In fp64: in fp32, Adam turns the rounding of near-zero gradients (summed in another order
    by 4 micro-batches than by one batch) into differences of a few percent of an update, which depend on the
    CPU's matmul kernels (one weight in 16,384 was 3.4e-5 off on one machine and within 1e-5 on another). Each
    path's loss is compared with a reference loss of the same precision."""
    from accelerate import Accelerator

    from training.step import train_step

    accum, B, T, steps = 4, 2, 16, 3
    cfg = SimpleNamespace(**{**vars(RECIPE), "max_lr": 1e-3, "warmup_steps": 1, "max_steps": steps})
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 50257, (accum * B, T + 1), generator=g) for _ in range(steps)]

    ours, ref = _tiny().double(), _tiny().double()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    acc = Accelerator(gradient_accumulation_steps=accum, cpu=True)
    opt = build_adamw(ours, cfg, "cpu")
    model, opt = acc.prepare(ours, opt)
    ref_opt = torch.optim.AdamW(
        [{"params": [p for p in ref.parameters() if p.dim() >= 2], "weight_decay": 0.1},
         {"params": [p for p in ref.parameters() if p.dim() < 2], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8)

    from model_helpers import spy_chunked_loss

    chunked_calls = spy_chunked_loss(monkeypatch)
    logits_returned = []  # train_step asks for the loss only: no (B, T, V) output for autograd to carry
    ours.register_forward_hook(lambda module, args, out: logits_returned.append(out.logits is not None))
    for step, batch in enumerate(data):
        micro = iter([(batch[i * B:(i + 1) * B, :-1], batch[i * B:(i + 1) * B, 1:]) for i in range(accum)])
        set_lr(opt, lr_at(step, cfg))
        loss, norm = train_step(acc, model, micro, accum, 1.0, torch.device("cpu"), loss_chunk_tokens=loss_chunk_tokens)
        # every micro-batch of ours took the chunked loss when asked (the plain reference below never does)
        assert chunked_calls == ([B * T] * accum * (step + 1) if loss_chunk_tokens else [])
        assert logits_returned == [False] * accum * (step + 1)
        opt.step()
        opt.zero_grad(set_to_none=True)

        for group in ref_opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if loss_chunk_tokens:  # the chunked loss computes in the model's dtype, as F.cross_entropy does
            ref_logits = ref(input_ids=batch[:, :-1]).logits  # (accum * B, T, V) fp64
            ref_loss = F.cross_entropy(ref_logits.flatten(0, 1), batch[:, 1:].flatten())
        else:  # transformers' loss, like ours here: fp32 whatever the model's dtype
            ref_loss = ref(input_ids=batch[:, :-1], shift_labels=batch[:, 1:]).loss
        ref_loss.backward()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_opt.zero_grad(set_to_none=True)

        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)  # the logged loss is summed in fp32
        assert norm.item() == pytest.approx(ref_norm.item(), rel=1e-10)
        assert norm.item() > 1.0  # clipping was active, so it was tested
    # Each AdamW update moves a weight by ~lr = 1e-3, and weight decay alone by lr * 0.1 * |w| ~ 1e-6: 1e-9 is far
    # below both (fp64 rounding differences are ~1e-14) and far below the 3 updates' movement checked below.
    init = _tiny().double()
    for (name, a), b, a0 in zip(ours.named_parameters(), ref.parameters(), init.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=name)
    moved = max((a - a0).abs().max().item() for a, a0 in zip(ours.parameters(), init.parameters()))
    assert moved > 1e-3
    assert math.isfinite(loss.item())


class _OneProcess:
    """What optimizer_step uses of the Accelerator, for one process."""

    num_processes = 1

    @staticmethod
    def reduce(tensor, reduction):
        return tensor


def _step_with(monkeypatch, optimizer, param, scale_by=None, poison=False):
    """optimizer_step on a one-parameter problem; `scale_by` is a GradScaler (fp16), `poison` makes the gradient
    inf (an fp16 overflow)."""
    from training import step

    def train_step(accelerator, model, batches, grad_accum, grad_clip, device, digests, chunk):
        loss = (param ** 2).sum()
        (scale_by.scale(loss) if scale_by else loss).backward()
        if poison:
            param.grad.fill_(float("inf"))
        if scale_by:
            scale_by.unscale_(optimizer.optimizer)  # as accelerator.clip_grad_norm_ does under fp16
        return loss.detach(), torch.nn.utils.clip_grad_norm_([param], 1.0)

    monkeypatch.setattr(step, "train_step", train_step)
    return step.optimizer_step(_OneProcess(), None, optimizer, None, lr=1e-2, grad_accum=1, grad_clip=1.0,
                               device=torch.device("cpu"))


def test_fp16_overflow_is_skipped_by_the_grad_scaler_not_an_error(fresh_accelerate, monkeypatch):
    """Under fp16 the GradScaler owns found_inf: an overflowing step (inf grad norm) is skipped with the scale
    lowered, as fp16 training expects, and the fused on-device check stays out of its way."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    Accelerator(cpu=True)
    param = torch.nn.Parameter(torch.ones(4))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer = AcceleratedOptimizer(torch.optim.AdamW([param], lr=1e-2, fused=True), device_placement=False,
                                     scaler=scaler)
    loss, norm, _ = _step_with(monkeypatch, optimizer, param, scale_by=scaler, poison=True)
    assert math.isfinite(loss) and math.isinf(norm)
    assert torch.equal(param.detach(), torch.ones(4)) and scaler.get_scale() == 512.0  # skipped, scale halved
    _step_with(monkeypatch, optimizer, param, scale_by=scaler)
    assert not torch.equal(param.detach(), torch.ones(4))  # the next, finite step updates


def _unfused_checkpoint(tmp_path, device="cpu"):
    """optimizer.pt of an unfused AdamW (a CPU run) after one step; returns (param, saved folder)."""
    param = torch.nn.Parameter(torch.ones(4, device=device))
    unfused = torch.optim.AdamW([param], lr=1e-2)
    param.grad = torch.ones_like(param)
    unfused.step()
    torch.save(unfused.state_dict(), tmp_path / "optimizer.pt")
    param.grad = None
    return param, tmp_path


def test_a_checkpoint_from_an_unfused_run_steps_fused_after_resume(fresh_accelerate, monkeypatch, tmp_path):
    """The saved groups say fused=None (a CPU run's checkpoint); load_optimizer gives them this run's flags
    before loading, so the step counters are placed for the fused kernel and the fused step (with the on-device
    non-finite check) runs."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from training.checkpoint_state import load_optimizer

    accelerator = Accelerator(cpu=True)
    param, folder = _unfused_checkpoint(tmp_path)
    fused = torch.optim.AdamW([param], lr=1e-2, fused=True)
    optimizer = AcceleratedOptimizer(fused, device_placement=False)
    load_optimizer(accelerator, None, optimizer, folder)
    assert fused.param_groups[0]["fused"] is True and fused.state[param]["step"].item() == 1
    before = param.detach().clone()
    _step_with(monkeypatch, optimizer, param)
    assert not torch.equal(param.detach(), before) and "found_inf" not in vars(fused)
    assert fused.state[param]["step"].item() == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cpu_checkpoint_resumes_fused_on_cuda(fresh_accelerate, tmp_path):
    """On a GPU the fused kernel refuses step counters left on the CPU (pytorch#124133)."""
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from training.checkpoint_state import load_optimizer

    accelerator = Accelerator()
    _, folder = _unfused_checkpoint(tmp_path)
    param = torch.nn.Parameter(torch.ones(4, device="cuda"))
    fused = torch.optim.AdamW([param], lr=1e-2, fused=True)
    load_optimizer(accelerator, None, AcceleratedOptimizer(fused, device_placement=False), folder)
    assert fused.state[param]["step"].device == param.device
    param.grad = torch.ones_like(param)
    fused.step()
    assert fused.state[param]["step"].item() == 2


def test_the_fp16_loss_scale_is_saved_and_restored(tmp_path):
    """Under fp16 a checkpoint keeps the GradScaler's scale: a resumed run does not restart at 65536 and skip its
    first steps for overflow. Without a scaler (bf16, fp32) nothing is written."""
    from types import SimpleNamespace

    from training.checkpoint_state import GRAD_SCALER_FILE, load_grad_scaler, save_grad_scaler

    trained = torch.amp.GradScaler("cpu", init_scale=65536.0)
    trained.scale(torch.ones(()))  # the scale exists once used
    trained.update(new_scale=512.0)  # after overflows the scale came down
    save_grad_scaler(SimpleNamespace(scaler=trained), tmp_path)
    resumed = torch.amp.GradScaler("cpu", init_scale=65536.0)
    load_grad_scaler(SimpleNamespace(scaler=resumed), tmp_path)
    assert resumed.get_scale() == 512.0
    (tmp_path / "bf16").mkdir()
    save_grad_scaler(SimpleNamespace(scaler=None), tmp_path / "bf16")
    assert not (tmp_path / "bf16" / GRAD_SCALER_FILE).exists()
