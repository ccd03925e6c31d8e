"""train_step_torch.py CONFIG B STEPS [ft [MODE [K]]]: the PyTorch side of bench_train_step.sh and
bench_finetune.sh. Times the training step (forward, backward, torch.optim.Adam as the reference's recipe:
weight decay 5e-7, betas (0.95, 0.999)) of the independent reference model tests/ref/cavmae_ref.py on random
inputs, with the threads from OMP_NUM_THREADS (Debian's torch otherwise uses 1): CAVMAE's pretraining step, or
with `ft` CAVMAEFT's fine-tuning step (MODE multimodal by default, K = 527 classes, BCE with logits on random
0/1 targets, the head's parameter group at 100x the rate as the reference's AS-20K recipe). Prints forward_s,
backward_s, adam_s, step_s and samples_per_s averaged over STEPS steps after one warm-up step."""
import os
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
audio = (torch.rand(B, 1024, 128) * 3.46 - 1.73).to(dev)
video = (torch.rand(B, 3, 224, 224) * 3.46 - 1.73).to(dev)
tf = tb = ta = 0.0
for i in range(steps + 1):
    t0 = time.perf_counter()
    loss = bce(model(audio, video, mode), target) if ft else model(audio, video, 0.75, 0.75, 1.0, 0.01)[0]
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sync()
    t2 = time.perf_counter()
    opt.step()
    sync()
    t3 = time.perf_counter()
    if i:
        tf, tb, ta = tf + t1 - t0, tb + t2 - t1, ta + t3 - t2
tot = tf + tb + ta
print(f"forward_s {tf / steps:.4f}\nbackward_s {tb / steps:.4f}\nadam_s {ta / steps:.4f}\nstep_s {tot / steps:.4f}")
print(f"samples_per_s {B * steps / tot:.4f}")
