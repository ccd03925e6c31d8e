#!/usr/bin/python3
"""ref_extract_frames.py OUTDIR CLIP...: the reference's frame extraction (src/preprocess/extract_video_frame.py,
cav-numerics(7) 1.2) for the av-extract benchmark: per clip an OpenCV VideoCapture, ten CAP_PROP_POS_FRAMES seeks +
reads, BGR->RGB, torchvision Resize(224) + CenterCrop(224) + ToTensor, save_image to OUTDIR/frame_{i}/ID.jpg.
Prints the CPU and wall seconds of the per-clip loop (imports excluded, as they are paid once per dataset)."""
import os, sys, time
import cv2
from PIL import Image
import torch
import torchvision.transforms as T
from torchvision.utils import save_image

torch.set_num_threads(1)
out, clips = sys.argv[1], sys.argv[2:]
preprocess = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
for i in range(10):
    os.makedirs(os.path.join(out, "frame_%d" % i), exist_ok=True)
c0, w0 = time.process_time(), time.perf_counter()
for path in clips:
    vid = os.path.splitext(os.path.basename(path))[0]
    vidcap = cv2.VideoCapture(path)
    fps = vidcap.get(cv2.CAP_PROP_FPS)
    total_frame_num = min(int(vidcap.get(cv2.CAP_PROP_FRAME_COUNT)), int(fps * 10))
    for i in range(10):
        frame_idx = int(i * (total_frame_num / 10))
        vidcap.set(cv2.CAP_PROP_POS_FRAMES, frame_idx - 1)
        _, frame = vidcap.read()
        image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        save_image(preprocess(image), os.path.join(out, "frame_%d" % i, vid + ".jpg"))
print("%.6f %.6f" % (time.process_time() - c0, time.perf_counter() - w0))
