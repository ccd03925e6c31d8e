"""train_step_torch.py CONFIG B STEPS: the PyTorch side of bench_train_step.sh. Times the training step
(forward, backward, torch.optim.Adam as the reference's recipe: weight decay 5e-7, betas (0.95, 0.999)) of
the independent reference model tests/ref/cavmae_ref.py on random inputs, with the threads from
OMP_NUM_THREADS (Debian's torch otherwise uses 1). Prints forward_s, backward_s, adam_s, step_s and
samples_per_s averaged over STEPS steps after one warm-up step."""
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ref"))
import cavmae_ref  # noqa: E402

cfg, B, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
torch.manual_seed(1)
kw = dict(norm_pix_loss=True)
if cfg == "tiny":
    kw.update(embed_dim=192, num_heads=3, modality_specific_depth=4, depth=5, decoder_embed_dim=128,
              decoder_depth=2, decoder_num_heads=4)
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
model = cavmae_ref.CAVMAE(**kw).to(dev)
opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, weight_decay=5e-7,
                       betas=(0.95, 0.999))
audio = (torch.rand(B, 1024, 128) * 3.46 - 1.73).to(dev)
video = (torch.rand(B, 3, 224, 224) * 3.46 - 1.73).to(dev)
tf = tb = ta = 0.0
for i in range(steps + 1):
    t0 = time.perf_counter()
    loss = model(audio, video, 0.75, 0.75, 1.0, 0.01)[0]
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
