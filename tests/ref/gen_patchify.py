#!/usr/bin/python3
"""gen_patchify.py OUTDIR: golden patch tokens from a PyTorch reimplementation of the reference's
patchify (cav_mae.py: reshape (N,c,h,p,w,p), einsum nchpwq->nhwpqc, reshape (N, h*w, p*p*c)), applied as
forward_mae_loss does (audio: fbank.unsqueeze(1).transpose(2,3), c=1, h=8, w=64; video: c=3, h=w=14), the
norm_pix_loss targets (unbiased var, eps 1e-6), the PatchEmbed token order (Conv2d k=s=16, then
flatten(2).transpose(1,2)) with one-hot kernels, torchvision-style frame normalisation (ToTensor + ImageNet
Normalize), and overlapping patches via torch.nn.functional.unfold. Raw little-endian files:
  fbank.f32 [1024,128]           audio_tokens.f32 [512,256]     audio_normpix.f32 [512,256]
  frame.u8 [224,224,3] (HWC)     frame_norm.f32 [224,224,3]     video_tokens.f32 [196,768] (of frame_norm)
  video_normpix.f32 [196,768]    video_conv.f32 [196,768] (conv order: element c*256 + p*16 + q)
  audio_conv.f32 [512,256]       audio_unfold_p16_s10.f32 [L,256] and its L in index.txt
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = torch.Generator().manual_seed(1234)


def patchify(imgs, c, h, w, p=16):
    x = imgs.reshape(shape=(imgs.shape[0], c, h, p, w, p))
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * c))


def norm_pix(t):
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, keepdim=True)
    return (t - mean) / (var + 1.0e-6) ** 0.5


def conv_tokens(imgs, c, p=16):
    # One output channel per kernel element (c, kh, kw): the output is the token content in conv order.
    k = torch.eye(c * p * p).reshape(c * p * p, c, p, p)
    y = F.conv2d(imgs.double(), k.double(), stride=p)
    return y.flatten(2).transpose(1, 2).float()


def save(name, t):
    t.detach().numpy().astype(t.numpy().dtype.newbyteorder("<")).tofile(os.path.join(out, name))


fbank = torch.randn(1, 1024, 128, generator=g) * 4 - 5
a = fbank.unsqueeze(1).transpose(2, 3)  # [1,1,128,1024]
save("fbank.f32", fbank[0])
save("audio_tokens.f32", patchify(a, 1, 8, 64)[0])
save("audio_normpix.f32", norm_pix(patchify(a, 1, 8, 64))[0])
save("audio_conv.f32", conv_tokens(a, 1)[0])
unf = F.unfold(a, kernel_size=16, stride=10)[0].T  # [L, 256], element order p*16+q (c=1)
save("audio_unfold_p16_s10.f32", unf)

frame = torch.randint(0, 256, (224, 224, 3), generator=g, dtype=torch.uint8)
save("frame.u8", frame)
x = frame.permute(2, 0, 1).float().div(255)  # ToTensor
mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
x = ((x - mean) / std).unsqueeze(0)  # Normalize
save("frame_norm.f32", x[0].permute(1, 2, 0).contiguous())
save("video_tokens.f32", patchify(x, 3, 14, 14)[0])
save("video_normpix.f32", norm_pix(patchify(x, 3, 14, 14))[0])
save("video_conv.f32", conv_tokens(x, 3)[0])
with open(os.path.join(out, "index.txt"), "w") as f:
    f.write(f"audio_unfold_p16_s10 {unf.shape[0]}\n")
print("gen_patchify: audio [512,256], video [196,768], unfold", tuple(unf.shape))
