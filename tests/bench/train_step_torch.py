"""train_step_torch.py CONFIG B STEPS [ft [MODE [K]]]: the PyTorch side of bench_train_step.sh and
bench_finetune.sh. Times the training step (forward, backward, torch.optim.Adam as the reference's recipe:
weight decay 5e-7, betas (0.95, 0.999)) of the independent reference model tests/ref/cavmae_ref.py on random
inputs, with the threads from OMP_NUM_THREADS (Debian's torch otherwise uses 1): CAVMAE's pretraining step, or
with `ft` CAVMAEFT's fine-tuning step (MODE multimodal by default, K = 527 classes, BCE with logits on random
0/1 targets, the head's parameter group at 100x the rate as the reference's AS-20K recipe). Prints forward_s,
backward_s, adam_s, step_s and samples_per_s averaged over STEPS steps after one warm-up step, the peak memory
(peak_mib: torch's allocator peak on a GPU, the process's resident peak on the CPU) and the last loss.
CAV_BENCH_PRECISION (bench_gpu_train.sh): fp32 (the default), bf16 (the step under torch.autocast(bfloat16)) or
fp16 (the reference's AMP as its traineval loop runs it: autocast(float16), GradScaler); weights and Adam stay
fp32. Out of memory exits 3 with "out of memory" on stderr (gpu_train.py's batch search)."""
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import cavmae_ref  # noqa: E402

cfg, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ft = len(sys.argv) > 4 and sys.argv[4] == "ft"
mode = sys.argv[5] if len(sys.argv) > 5 else "multimodal"
K = int(sys.argv[6]) if len(sys.argv) > 6 else 527
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
torch.manual_seed(1)
kw = dict(norm_pix_loss=True)
if cfg == "tiny":
    kw.update(embed_dim=192, num_heads=3, modality_specific_depth=4, depth=5)
    if not ft:
        kw.update(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
# CAV_BENCH_DEVICE=cuda (tests/bench/gpu_session.sh): the same model on the GPU in strict fp32 (no TF32)
dev = torch.device(os.environ.get("CAV_BENCH_DEVICE", "cpu"))
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
if dev.type == "cuda":  # the reference makes its masks and indices with factory calls: put them there too
    if hasattr(torch, "set_default_device"):  # torch >= 2.0
        torch.set_default_device(dev)
    else:
        sys.exit("train_step_torch.py: the reference model on a GPU needs torch >= 2.0 (torch.set_default_device)")
if ft:
    model = cavmae_ref.CAVMAEFT(K, **kw).to(dev)
    head = [p for n, p in model.named_parameters() if n.startswith("mlp_head.") and p.requires_grad]
    base = [p for n, p in model.named_parameters() if not n.startswith("mlp_head.") and p.requires_grad]
    opt = torch.optim.Adam([{"params": base, "lr": 5e-5}, {"params": head, "lr": 5e-5 * 100}], weight_decay=5e-7,
                           betas=(0.95, 0.999))
    target = (torch.rand(B, K) < 0.02).float().to(dev)
    bce = torch.nn.BCEWithLogitsLoss()
else:
    model = cavmae_ref.CAVMAE(**kw).to(dev)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, weight_decay=5e-7,
                           betas=(0.95, 0.999))
precision = os.environ.get("CAV_BENCH_PRECISION", "fp32")
if precision not in ("fp32", "bf16", "fp16"):
    sys.exit(f"train_step_torch.py: CAV_BENCH_PRECISION={precision}: expected fp32, bf16 or fp16")
if precision == "fp16" and dev.type != "cuda":
    sys.exit("train_step_torch.py: CAV_BENCH_PRECISION=fp16 (the reference's AMP) needs a GPU: CPU autocast is "
             "bfloat16 only")
if precision == "fp32":
    autocast = torch.autocast(dev.type, enabled=False)
else:
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
# the reference's fp16 AMP scales the loss (its traineval: scaler.scale(loss).backward(), scaler.step(optimizer),
# scaler.update()); disabled, the scaler passes everything through unchanged
scaler = torch.cuda.amp.GradScaler(enabled=precision == "fp16")
audio = (torch.rand(B, 1024, 128) * 3.46 - 1.73).to(dev)
video = (torch.rand(B, 3, 224, 224) * 3.46 - 1.73).to(dev)
tf = tb = ta = 0.0

def step():
    """one training step: (forward, backward, Adam) seconds and the loss"""
    t0 = time.perf_counter()
    with autocast:
        loss = bce(model(audio, video, mode), target) if ft else model(audio, video, 0.75, 0.75, 1.0, 0.01)[0]
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    sync()
    t2 = time.perf_counter()
    scaler.step(opt)
    scaler.update()
    sync()
    return t1 - t0, t2 - t1, time.perf_counter() - t2, loss


try:
    for i in range(steps + 1):
        t = step()
        if i:
            tf, tb, ta = tf + t[0], tb + t[1], ta + t[2]
except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one (torch >= 1.13); older ones say it in the text
    if "out of memory" not in str(e):
        raise
    print(f"train_step_torch.py: {cfg} B {B} {precision}: out of memory", file=sys.stderr)
    sys.exit(3)
tot = tf + tb + ta
print(f"forward_s {tf / steps:.4f}\nbackward_s {tb / steps:.4f}\nadam_s {ta / steps:.4f}\nstep_s {tot / steps:.4f}")
print(f"samples_per_s {B * steps / tot:.4f}")
if dev.type == "cuda":
    print(f"peak_mib {torch.cuda.max_memory_allocated(dev) / 2**20:.1f}")
else:  # ru_maxrss is in KiB on Linux
    print(f"peak_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
print(f"last_loss {t[3].item():.9g}")
