"""cavmae_ref.py: an independent PyTorch implementation of the reference CAV-MAE model (cav-numerics(7) section 2),
written from cav-numerics(7) for Debian's python3-torch 1.13 (no timm). It is the yardstick the C model is checked
against: the debug-state generator (gen_debug_states.py), the .pth writer (gen_pth.py) and the interop tests
build it. Parameter names, shapes, initialisation and the reference's quirks are kept:

- Block = timm 0.4.5 Block with six LayerNorms (norm1/norm2 for the joint stream, *_a and *_v for the
  modality streams), eps 1e-5, exact (erf) GELU, attention scale applied after q @ k^T (cav-numerics(7) 2.1).
- 2-D sin-cos position tables computed in float64 and cast to float32; the first half of each vector
  encodes the column (time for audio), the second half the row (frequency) (cav-numerics(7) 2.4).
- The contrastive stream loop of forward_encoder feeds the same input to every joint block, so with more
  than one joint layer only the last one counts (cav-numerics(7) 2.7 step 5); forward_feat and CAVMAEFT chain properly.
- The decoder slices the visual tokens at `num_patches_a - n_masked_a` of sample 0 (cav-numerics(7) 2.8).
- Masking: `keep` tensors (the reference's ids_shuffle[:, :len_keep], in kept order) can be injected; the
  mask and ids_restore are then derived exactly as the reference derives them from ids_shuffle (the
  removed tokens follow in ascending order, which does not change any output: every removed slot gets the
  same mask token).

Extensions beyond the reference (defaults reproduce it):
- `depth`: total encoder depth (the reference fixes 12): `modality_specific_depth` audio and visual layers
  and `depth - modality_specific_depth` joint layers.
- `audio_length` (frames, multiple of 16; 128 mel bins always) and `img_size` (multiple of 16) make tiny
  configurations cheap. The audio grid is 8 x audio_length/16 (frequency-major), the image grid square.
- `bidirect_contrast` as a forward argument (the reference has it on forward_contrastive only).
- `modalities` ('av' default, 'a', 'v'): single-modality pretraining for the paper's Audio-MAE and
  Visual-MAE baselines (see VARIANTS).

The six pretraining variants of the paper (section 3 and Table 1 of the paper, "Self-supervised model
pretraining") expressed with these knobs, for the base sizes (depth 12):

- Audio-MAE: "the model architecture is the same with Vanilla AV-MAE but only pretrained with data of a
  single modality": modality_specific_depth 0 (12 joint layers), modalities 'a' (only audio tokens go
  through the encoder and the decoder; the loss is the audio MAE loss), contrast_loss_weight 0.
- Visual-MAE: the same with modalities 'v'.
- CAV: "the same encoder architecture (modal-specific encoders + joint encoder) with CAV-MAE but remove the
  reconstruction objective": modality_specific_depth 11, mae_loss_weight 0, contrast_loss_weight 0.01
  (the paper also reports 0.1). The decoder exists but gets no gradient.
- Vanilla AV-MAE: "a joint encoder and no contrastive objective": modality_specific_depth 0 (12 joint
  layers over the concatenated audio and visual tokens), contrast_loss_weight 0. Each modality is masked
  75% on its own (the reference's masking; the paper's text masks the concatenation).
- AV-MAE: CAV-MAE's architecture with lambda_c = 0: modality_specific_depth 11, contrast_loss_weight 0.
- CAV-MAE: modality_specific_depth 11, mae_loss_weight 1, contrast_loss_weight 0.01.
"""

import math
import random

import torch
import torch.nn as nn
import torch.nn.functional as F

# Knobs per variant, relative to the base (or tiny) sizes; `msd` = modality_specific_depth, where 'full'
# means depth - 1 (11 at base).
VARIANTS = {
    'audio_mae': dict(msd=0, modalities='a', mae_loss_weight=1.0, contrast_loss_weight=0.0),
    'visual_mae': dict(msd=0, modalities='v', mae_loss_weight=1.0, contrast_loss_weight=0.0),
    'cav': dict(msd='full', modalities='av', mae_loss_weight=0.0, contrast_loss_weight=0.01),
    'vanilla_av_mae': dict(msd=0, modalities='av', mae_loss_weight=1.0, contrast_loss_weight=0.0),
    'av_mae': dict(msd='full', modalities='av', mae_loss_weight=1.0, contrast_loss_weight=0.0),
    'cav_mae': dict(msd='full', modalities='av', mae_loss_weight=1.0, contrast_loss_weight=0.01),
}

# The reference's constructor and forward defaults (cav-numerics(7) 2.2, 2.11, 2.12), plus this file's extensions.
PRETRAIN_DEFAULTS = dict(img_size=224, audio_length=1024, patch_size=16, in_chans=3, embed_dim=768,
                         modality_specific_depth=11, num_heads=12, decoder_embed_dim=512, decoder_depth=8,
                         decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=False, tr_pos=False, depth=12,
                         modalities='av')
FORWARD_DEFAULTS = dict(mask_ratio_a=0.75, mask_ratio_v=0.75, mae_loss_weight=1.0, contrast_loss_weight=0.01,
                        mask_mode='unstructured', bidirect_contrast=False)
FT_DEFAULTS = dict(img_size=224, audio_length=1024, patch_size=16, in_chans=3, embed_dim=768,
                   modality_specific_depth=11, num_heads=12, mlp_ratio=4.0, norm_pix_loss=False, tr_pos=True,
                   depth=12)
FT_MODES = ('multimodal', 'audioonly', 'videoonly', 'missingaudioonly', 'missingvideoonly')


# ---------------------------------------------------------------------------------------------------------
# Position tables (cav-numerics(7) 2.4)

def sincos_1d(dim, pos):
    """pos: float64 [M] -> float64 [M, dim] = [sin(pos*w), cos(pos*w)], w_m = 1/10000^(m/(dim/2))."""
    assert dim % 2 == 0
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = pos.reshape(-1, 1).to(torch.float64) * omega.reshape(1, -1)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim, grid_h, grid_w):
    """float32 [grid_h*grid_w, dim]; token k = i*grid_w + j; first half encodes j (column), second half i."""
    assert dim % 4 == 0
    i = torch.arange(grid_h, dtype=torch.float32).repeat_interleave(grid_w)  # row of token k
    j = torch.arange(grid_w, dtype=torch.float32).repeat(grid_h)  # column of token k
    emb = torch.cat([sincos_1d(dim // 2, j), sincos_1d(dim // 2, i)], dim=1)
    return emb.to(torch.float32)


# ---------------------------------------------------------------------------------------------------------
# Building blocks (cav-numerics(7) 2.1)

class PatchEmbed(nn.Module):
    def __init__(self, in_chans, embed_dim, patch_size=16):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):  # [B, C, H, W] -> [B, H/16*W/16, D], row-major over the grid
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # [B, N, C]
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, C/H]
        attn = (q @ k.transpose(-2, -1)) * self.scale  # scale after the matmul, as timm 0.4.5
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm1_a = nn.LayerNorm(dim)
        self.norm1_v = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.norm2_a = nn.LayerNorm(dim)
        self.norm2_v = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, modality=None):
        if modality is None:
            n1, n2 = self.norm1, self.norm2
        elif modality == 'a':
            n1, n2 = self.norm1_a, self.norm2_a
        elif modality == 'v':
            n1, n2 = self.norm1_v, self.norm2_v
        else:
            raise ValueError(modality)
        x = x + self.attn(n1(x))
        x = x + self.mlp(n2(x))
        return x


def _init_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Masking (cav-numerics(7) 2.6)

def masking_from_keep(keep, L):
    """keep: int64 [B, len_keep] (ids_shuffle[:, :len_keep]) -> (ids_shuffle [B,L], ids_restore [B,L],
    mask f32 [B,L] with 0 = kept, 1 = removed), built as the reference builds them from ids_shuffle."""
    B, len_keep = keep.shape
    rows = []
    for b in range(B):
        kept = keep[b].tolist()
        if len(set(kept)) != len_keep or min(kept, default=0) < 0 or max(kept, default=0) >= L:
            raise ValueError('keep indices must be distinct and in [0, %d)' % L)
        ks = set(kept)
        rows.append(kept + [i for i in range(L) if i not in ks])
    ids_shuffle = torch.tensor(rows, dtype=torch.int64).reshape(B, L)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones([B, L])
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return ids_shuffle, ids_restore, mask


def draw_keep_unstructured(B, L, mask_ratio, generator=None):
    """The reference's random_masking_unstructured draw: kept indices ids_shuffle[:, :len_keep]."""
    len_keep = int(L * (1 - mask_ratio))
    noise = torch.rand(B, L, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    return ids_shuffle[:, :len_keep].contiguous()


def draw_keep_structured(B, f, t, mask_ratio, mode, generator=None, rng=None):
    """The reference's random_masking_structured draw (audio only; noise viewed as [B, f, t], whole time
    columns / frequency rows forced out with noise 1.1). rng: a random.Random for the column/row choice."""
    rng = rng or random
    L = f * t
    len_keep = int(L * (1 - mask_ratio))
    noise = torch.rand(B, L, generator=generator).reshape(B, f, t)
    for i in range(B):
        if mode == 'time':
            for k in rng.sample(range(t), int(t * mask_ratio)):
                noise[i, :, k] = 1.1
        elif mode == 'freq':
            for k in rng.sample(range(f), int(f * mask_ratio)):
                noise[i, k, :] = 1.1
        elif mode == 'tf':
            for k in rng.sample(range(t), int(t * mask_ratio * 0.7)):
                noise[i, :, k] = 1.1
        else:
            raise ValueError(mode)
    if mode == 'tf':  # the reference draws all columns first, then all rows, in two loops
        for i in range(B):
            for k in rng.sample(range(f), int(f * mask_ratio * 0.7)):
                noise[i, k, :] = 1.1
    ids_shuffle = torch.sort(noise.reshape(B, L), dim=1, stable=True)[1]
    return ids_shuffle[:, :len_keep].contiguous()


# ---------------------------------------------------------------------------------------------------------

class _Encoder(nn.Module):
    """The parts CAVMAE and CAVMAEFT share: patch embeddings, modality and position embeddings, blocks_a,
    blocks_v, blocks_u and the three final norms."""

    def _build_encoder(self, img_size, audio_length, patch_size, in_chans, embed_dim, modality_specific_depth,
                       num_heads, mlp_ratio, tr_pos, depth):
        assert patch_size == 16, 'the reference hard-codes 16x16 patches in its patchify'
        assert audio_length % 16 == 0 and img_size % 16 == 0
        assert 0 <= modality_specific_depth <= depth
        self.f_a, self.t_a = 128 // patch_size, audio_length // patch_size  # audio grid: 8 x 64 at base
        self.g_v = img_size // patch_size
        self.num_patches_a = self.f_a * self.t_a
        self.num_patches_v = self.g_v * self.g_v
        self.patch_embed_a = PatchEmbed(1, embed_dim, patch_size)
        self.patch_embed_v = PatchEmbed(in_chans, embed_dim, patch_size)
        self.modality_a = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.modality_v = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed_a = nn.Parameter(torch.zeros(1, self.num_patches_a, embed_dim), requires_grad=tr_pos)
        self.pos_embed_v = nn.Parameter(torch.zeros(1, self.num_patches_v, embed_dim), requires_grad=tr_pos)
        self.blocks_a = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio)
                                       for _ in range(modality_specific_depth)])
        self.blocks_v = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio)
                                       for _ in range(modality_specific_depth)])
        self.blocks_u = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio)
                                       for _ in range(depth - modality_specific_depth)])
        self.norm_a = nn.LayerNorm(embed_dim)
        self.norm_v = nn.LayerNorm(embed_dim)
        self.norm = nn.LayerNorm(embed_dim)

    def _init_encoder(self):
        D = self.pos_embed_a.shape[-1]
        self.pos_embed_a.data.copy_(sincos_2d(D, self.f_a, self.t_a).unsqueeze(0))
        self.pos_embed_v.data.copy_(sincos_2d(D, self.g_v, self.g_v).unsqueeze(0))
        for pe in (self.patch_embed_a, self.patch_embed_v):
            w = pe.proj.weight.data
            nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.modality_a, std=0.02)
        nn.init.normal_(self.modality_v, std=0.02)

    def embed_a(self, a):  # [B, T, 128] (time, mel) -> [B, 8*T/16, D], token f*t_a + t
        a = a.unsqueeze(1).transpose(2, 3)
        return self.patch_embed_a(a) + self.pos_embed_a + self.modality_a

    def embed_v(self, v):  # [B, 3, H, W] -> [B, (H/16)^2, D]
        return self.patch_embed_v(v) + self.pos_embed_v + self.modality_v

    def feat(self, a, v):
        """forward_feat (cav-numerics(7) 2.11): unmasked, modality streams chained through blocks_u, [B,La,D],
        [B,Lv,D]."""
        a = self.embed_a(a)
        v = self.embed_v(v)
        for blk in self.blocks_a:
            a = blk(a)
        for blk in self.blocks_v:
            v = blk(v)
        for blk in self.blocks_u:
            a = blk(a, 'a')
        a = self.norm_a(a)
        for blk in self.blocks_u:
            v = blk(v, 'v')
        v = self.norm_v(v)
        return a, v


class CAVMAE(_Encoder):
    """The pretraining model (cav-numerics(7) 2.2-2.11)."""

    def __init__(self, img_size=224, audio_length=1024, patch_size=16, in_chans=3, embed_dim=768,
                 modality_specific_depth=11, num_heads=12, decoder_embed_dim=512, decoder_depth=8,
                 decoder_num_heads=16, mlp_ratio=4.0, norm_pix_loss=False, tr_pos=False, depth=12,
                 modalities='av'):
        super().__init__()
        assert modalities in ('av', 'a', 'v')
        self.modalities = modalities
        self._build_encoder(img_size, audio_length, patch_size, in_chans, embed_dim, modality_specific_depth,
                            num_heads, mlp_ratio, tr_pos, depth)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed_a = nn.Parameter(torch.zeros(1, self.num_patches_a, decoder_embed_dim),
                                                requires_grad=tr_pos)
        self.decoder_pos_embed_v = nn.Parameter(torch.zeros(1, self.num_patches_v, decoder_embed_dim),
                                                requires_grad=tr_pos)
        self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads, mlp_ratio)
                                             for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred_a = nn.Linear(decoder_embed_dim, patch_size ** 2 * 1, bias=True)
        self.decoder_pred_v = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)
        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self):
        self._init_encoder()
        Dd = self.decoder_pos_embed_a.shape[-1]
        self.decoder_pos_embed_a.data.copy_(sincos_2d(Dd, self.f_a, self.t_a).unsqueeze(0))
        self.decoder_pos_embed_v.data.copy_(sincos_2d(Dd, self.g_v, self.g_v).unsqueeze(0))
        nn.init.normal_(self.decoder_modality_a, std=0.02)
        nn.init.normal_(self.decoder_modality_v, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_weights)

    # -- patchify (cav-numerics(7) 2.9) --
    @staticmethod
    def patchify(imgs, c, h, w, p=16):  # [B, c, h*p, w*p] -> [B, h*w, p*p*c], element (p*16+q)*c + channel
        x = imgs.reshape(imgs.shape[0], c, h, p, w, p)
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(imgs.shape[0], h * w, p * p * c)

    @staticmethod
    def unpatchify(x, c, h, w, p=16):
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def _mask(self, x, keep, mask_ratio, mode, is_audio):
        B, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        if keep is None:
            if is_audio and mode != 'unstructured':
                keep = draw_keep_structured(B, self.f_a, self.t_a, mask_ratio, mode)
            else:
                keep = draw_keep_unstructured(B, L, mask_ratio)
        if tuple(keep.shape) != (B, len_keep):
            raise ValueError('keep has shape %s, expected (%d, %d)' % (tuple(keep.shape), B, len_keep))
        ids_shuffle, ids_restore, mask = masking_from_keep(keep, L)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        return x_masked, mask, ids_restore

    def forward_encoder(self, a, v, mask_ratio_a, mask_ratio_v, mask_mode='unstructured', keep_a=None,
                        keep_v=None):
        """cav-numerics(7) 2.7. Returns latent x (joint stream after `norm`), mask_a, ids_restore_a, mask_v,
        ids_restore_v, ca, cv. Single-modality models return None for the absent modality and for ca/cv."""
        use_a, use_v = 'a' in self.modalities, 'v' in self.modalities
        mask_a = ids_restore_a = mask_v = ids_restore_v = None
        parts = []
        if use_a:
            a = self.embed_a(a)
            a, mask_a, ids_restore_a = self._mask(a, keep_a, mask_ratio_a, mask_mode, True)
            for blk in self.blocks_a:
                a = blk(a)
            parts.append(a)
        if use_v:
            v = self.embed_v(v)
            v, mask_v, ids_restore_v = self._mask(v, keep_v, mask_ratio_v, 'unstructured', False)
            for blk in self.blocks_v:
                v = blk(v)
            parts.append(v)
        x = torch.cat(parts, dim=1)
        for blk in self.blocks_u:
            x = blk(x)
        x = self.norm(x)
        ca = cv = None
        if use_a and use_v:
            # The reference's loop: every joint block gets `a` itself (cav-numerics(7) 2.7 step 5).
            ca = a
            for blk in self.blocks_u:
                ca = blk(a, 'a')
            ca = self.norm_a(ca)
            cv = v
            for blk in self.blocks_u:
                cv = blk(v, 'v')
            cv = self.norm_v(cv)
        return x, mask_a, ids_restore_a, mask_v, ids_restore_v, ca, cv

    def forward_decoder(self, x, mask_a, ids_restore_a, mask_v, ids_restore_v):
        """cav-numerics(7) 2.8. Returns pred_a [B, La, 256], pred_v [B, Lv, 768] (None for an absent modality)."""
        x = self.decoder_embed(x)
        B, _, Dd = x.shape
        La = self.num_patches_a
        seqs = []
        n_vis_a = 0
        if mask_a is not None:
            n_a = int(mask_a[0].sum())
            n_vis_a = La - n_a  # the reference slices with num_patches_a - n_masked of sample 0
            a_ = torch.cat([x[:, :n_vis_a, :], self.mask_token.repeat(B, n_a, 1)], dim=1)
            a_ = torch.gather(a_, dim=1, index=ids_restore_a.unsqueeze(-1).repeat(1, 1, Dd))
            seqs.append((a_ + self.decoder_pos_embed_a) + self.decoder_modality_a)
        if mask_v is not None:
            n_v = int(mask_v[0].sum())
            v_ = torch.cat([x[:, n_vis_a:, :], self.mask_token.repeat(B, n_v, 1)], dim=1)
            v_ = torch.gather(v_, dim=1, index=ids_restore_v.unsqueeze(-1).repeat(1, 1, Dd))
            seqs.append((v_ + self.decoder_pos_embed_v) + self.decoder_modality_v)
        x = torch.cat(seqs, dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        pred_a = pred_v = None
        off = 0
        if mask_a is not None:
            pred_a = self.decoder_pred_a(x[:, :La, :])
            off = La
        if mask_v is not None:
            pred_v = self.decoder_pred_v(x[:, off:, :])
        return pred_a, pred_v

    def forward_contrastive(self, audio_rep, video_rep, bidirect_contrast=False):
        """cav-numerics(7) 2.10: S = norm(a) @ norm(v)^T / 0.05; softmax over audios (dim 0) for each video column."""
        audio_rep = F.normalize(audio_rep, dim=-1)
        video_rep = F.normalize(video_rep, dim=-1)
        total = torch.mm(audio_rep, video_rep.t()) / 0.05
        n = total.shape[0]
        ar = torch.arange(n)

        def one(s):
            nce = -torch.mean(torch.diag(F.log_softmax(s, dim=0)))
            acc = torch.sum(torch.eq(torch.argmax(F.softmax(s, dim=0), dim=0), ar)) / n
            return nce, acc

        if not bidirect_contrast:
            return one(total)
        n1, c1 = one(total)
        n2, c2 = one(total.t())
        return (n1 + n2) / 2, (c1 + c2) / 2

    def target_a(self, audio):  # [B, T, 128] -> [B, La, 256]
        x = audio.unsqueeze(1).transpose(2, 3)
        return self.patchify(x, 1, x.shape[2] // 16, x.shape[3] // 16, 16)

    def target_v(self, imgs):  # [B, 3, H, W] -> [B, Lv, 768]
        return self.patchify(imgs, 3, imgs.shape[2] // 16, imgs.shape[3] // 16, 16)

    def forward_mae_loss(self, inp, pred, mask, modality):
        target = self.target_a(inp) if modality == 'a' else self.target_v(inp)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as torch.var's default
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred - target) ** 2).mean(dim=-1)  # [B, L]
        return (loss * mask).sum() / mask.sum()

    def forward_all(self, audio, imgs, mask_ratio_a=0.75, mask_ratio_v=0.75, mae_loss_weight=1.,
                    contrast_loss_weight=0.01, mask_mode='unstructured', bidirect_contrast=False, keep_a=None,
                    keep_v=None):
        """Everything forward computes, as a dict (forward returns the reference's tuple)."""
        latent, mask_a, ids_restore_a, mask_v, ids_restore_v, ca, cv = self.forward_encoder(
            audio, imgs, mask_ratio_a, mask_ratio_v, mask_mode, keep_a, keep_v)
        zero = torch.tensor(0.0)
        pred_a = pred_v = None
        loss_mae_a = loss_mae_v = loss_mae = zero
        if mae_loss_weight != 0:
            pred_a, pred_v = self.forward_decoder(latent, mask_a, ids_restore_a, mask_v, ids_restore_v)
            if pred_a is not None:
                loss_mae_a = self.forward_mae_loss(audio, pred_a, mask_a, 'a')
            if pred_v is not None:
                loss_mae_v = self.forward_mae_loss(imgs, pred_v, mask_v, 'v')
            loss_mae = mae_loss_weight * (loss_mae_a + loss_mae_v)
        loss_c = c_acc = zero
        if contrast_loss_weight != 0:
            if ca is None:
                raise ValueError('the contrastive loss needs both modalities')
            loss_c, c_acc = self.forward_contrastive(ca.mean(dim=1), cv.mean(dim=1), bidirect_contrast)
            loss_c = contrast_loss_weight * loss_c
        loss = loss_mae + loss_c
        return dict(loss=loss, loss_mae=loss_mae, loss_mae_a=loss_mae_a, loss_mae_v=loss_mae_v, loss_c=loss_c,
                    mask_a=mask_a, mask_v=mask_v, c_acc=c_acc, pred_a=pred_a, pred_v=pred_v)

    def forward(self, audio, imgs, mask_ratio_a=0.75, mask_ratio_v=0.75, mae_loss_weight=1.,
                contrast_loss_weight=0.01, mask_mode='unstructured', bidirect_contrast=False, keep_a=None,
                keep_v=None):
        """cav-numerics(7) 2.11: (loss, loss_mae, loss_mae_a, loss_mae_v, loss_c, mask_a, mask_v, c_acc)."""
        r = self.forward_all(audio, imgs, mask_ratio_a, mask_ratio_v, mae_loss_weight, contrast_loss_weight,
                             mask_mode, bidirect_contrast, keep_a, keep_v)
        return (r['loss'], r['loss_mae'], r['loss_mae_a'], r['loss_mae_v'], r['loss_c'], r['mask_a'],
                r['mask_v'], r['c_acc'])

    def forward_inpaint(self, audio, imgs, mask_ratio_a=0.75, mask_ratio_v=0.75, mask_mode='unstructured',
                        keep_a=None, keep_v=None):
        latent, mask_a, ids_restore_a, mask_v, ids_restore_v, _, _ = self.forward_encoder(
            audio, imgs, mask_ratio_a, mask_ratio_v, mask_mode, keep_a, keep_v)
        pred_a, pred_v = self.forward_decoder(latent, mask_a, ids_restore_a, mask_v, ids_restore_v)
        return (pred_a, pred_v, mask_a, mask_v, self.forward_mae_loss(audio, pred_a, mask_a, 'a'),
                self.forward_mae_loss(imgs, pred_v, mask_v, 'v'))

    def forward_feat(self, a, v):
        return self.feat(a, v)


class CAVMAEFT(_Encoder):
    """The fine-tuning model (cav-numerics(7) 2.12): the encoder plus mlp_head = LayerNorm + Linear."""

    def __init__(self, label_dim, img_size=224, audio_length=1024, patch_size=16, in_chans=3, embed_dim=768,
                 modality_specific_depth=11, num_heads=12, mlp_ratio=4.0, norm_pix_loss=False, tr_pos=True,
                 depth=12):
        super().__init__()
        self._build_encoder(img_size, audio_length, patch_size, in_chans, embed_dim, modality_specific_depth,
                            num_heads, mlp_ratio, tr_pos, depth)
        self.mlp_head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, label_dim))
        self.initialize_weights()

    def initialize_weights(self):
        self._init_encoder()
        self.apply(_init_weights)

    def _single(self, x, modality):
        """x: embedded tokens of one modality after its own blocks -> pooled modality stream [B, D]."""
        for blk in self.blocks_u:
            x = blk(x, modality)
        x = (self.norm_a if modality == 'a' else self.norm_v)(x)
        return x.mean(dim=1)

    def _missing(self, x, modality):
        u = x
        for blk in self.blocks_u:
            u = blk(u)
        u = self.norm(u).mean(dim=1)
        return (u + self._single(x, modality)) / 2

    def forward(self, a, v, mode):
        if mode == 'multimodal':
            a = self.embed_a(a)
            v = self.embed_v(v)
            for blk in self.blocks_a:
                a = blk(a)
            for blk in self.blocks_v:
                v = blk(v)
            x = torch.cat((a, v), dim=1)
            for blk in self.blocks_u:
                x = blk(x)
            x = self.norm(x).mean(dim=1)
        elif mode in ('audioonly', 'missingaudioonly'):
            a = self.embed_a(a)
            for blk in self.blocks_a:
                a = blk(a)
            x = self._single(a, 'a') if mode == 'audioonly' else self._missing(a, 'a')
        elif mode in ('videoonly', 'missingvideoonly'):
            v = self.embed_v(v)
            for blk in self.blocks_v:
                v = blk(v)
            x = self._single(v, 'v') if mode == 'videoonly' else self._missing(v, 'v')
        else:
            raise ValueError(mode)
        return self.mlp_head(x)

    def forward_feat(self, a, v):
        return self.feat(a, v)


def ft_loss(logits, labels, loss='bce'):
    """BCEWithLogitsLoss (mean over B x K) or CrossEntropyLoss with soft targets (mean over B), cav-numerics(7) 3.3."""
    if loss == 'bce':
        return F.binary_cross_entropy_with_logits(logits, labels)
    if loss == 'ce':
        return F.cross_entropy(logits, labels)
    raise ValueError(loss)


def count_params(model):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


# ---------------------------------------------------------------------------------------------------------
# ImageNet-MAE initialisation (cav-numerics(7) 3.5)

def adapt_mae_state(mae, model):
    """The CAV-MAE starting point built from a MAE ViT state dict `mae` (timm names: patch_embed.proj,
    cls_token, pos_embed [1, 1+N, D], blocks.i, norm, mask_token, decoder_embed, decoder_pos_embed,
    decoder_blocks.i, decoder_norm, decoder_pred), with the reference's mapping, into CAVMAE `model`
    (whose own initialisation supplies what MAE lacks: modality embeddings, the audio position tables and
    the modality LayerNorms of the modality-specific and decoder blocks). Generalised to any depth: MAE
    block i < msd goes to blocks_a.i and blocks_v.i, block msd + j to blocks_u.j (the reference: 0..10
    and 11 -> blocks_u.0). Returns the new state dict."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    msd = len(model.blocks_a)
    parts = ('norm1', 'norm2', 'attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')

    def put(dst, src):
        if sd[dst].shape != mae[src].shape:
            raise ValueError('%s %s vs MAE %s %s' % (dst, tuple(sd[dst].shape), src, tuple(mae[src].shape)))
        sd[dst] = mae[src].clone().float()

    for i in range(msd):
        for p in parts:
            for wb in ('weight', 'bias'):
                put('blocks_a.%d.%s.%s' % (i, p, wb), 'blocks.%d.%s.%s' % (i, p, wb))
                put('blocks_v.%d.%s.%s' % (i, p, wb), 'blocks.%d.%s.%s' % (i, p, wb))
    for j in range(len(model.blocks_u)):
        for p in parts:
            for wb in ('weight', 'bias'):
                put('blocks_u.%d.%s.%s' % (j, p, wb), 'blocks.%d.%s.%s' % (msd + j, p, wb))
        for n in ('norm1', 'norm2'):
            for m in ('_a', '_v'):
                for wb in ('weight', 'bias'):
                    put('blocks_u.%d.%s%s.%s' % (j, n, m, wb), 'blocks.%d.%s.%s' % (msd + j, n, wb))
    for n in ('norm', 'norm_a', 'norm_v'):
        for wb in ('weight', 'bias'):
            put('%s.%s' % (n, wb), 'norm.%s' % wb)
    for k in mae:
        if k.startswith(('decoder_embed.', 'decoder_blocks.', 'decoder_norm.')) or k == 'mask_token':
            put(k, k)
    sd['pos_embed_v'] = mae['pos_embed'][:, 1:].clone().float()
    sd['decoder_pos_embed_v'] = mae['decoder_pos_embed'][:, 1:].clone().float()
    sd['patch_embed_a.proj.weight'] = mae['patch_embed.proj.weight'].sum(dim=1, keepdim=True).float()
    put('patch_embed_a.proj.bias', 'patch_embed.proj.bias')
    put('patch_embed_v.proj.weight', 'patch_embed.proj.weight')
    put('patch_embed_v.proj.bias', 'patch_embed.proj.bias')
    n_a = sd['decoder_pred_a.weight'].shape[0]
    sd['decoder_pred_a.weight'] = mae['decoder_pred.weight'][:n_a].clone().float()
    sd['decoder_pred_a.bias'] = mae['decoder_pred.bias'][:n_a].clone().float()
    put('decoder_pred_v.weight', 'decoder_pred.weight')
    put('decoder_pred_v.bias', 'decoder_pred.bias')
    return sd


def mae_like_state(embed_dim, depth, num_heads, decoder_embed_dim, decoder_depth, img_size=224, mlp_ratio=4.0,
                   generator=None):
    """A MAE ViT state dict with MAE's names and shapes (random values; position tables sin-cos with the
    cls slot), for testing the mapping without the real 1 GB checkpoint."""
    g = generator
    N = (img_size // 16) ** 2
    sd = {}

    def rnd(*shape):
        return 0.02 * torch.randn(*shape, generator=g)

    def block(prefix, d):
        h = int(d * mlp_ratio)
        for n in ('norm1', 'norm2'):
            sd[prefix + n + '.weight'] = 1 + rnd(d)
            sd[prefix + n + '.bias'] = rnd(d)
        sd[prefix + 'attn.qkv.weight'], sd[prefix + 'attn.qkv.bias'] = rnd(3 * d, d), rnd(3 * d)
        sd[prefix + 'attn.proj.weight'], sd[prefix + 'attn.proj.bias'] = rnd(d, d), rnd(d)
        sd[prefix + 'mlp.fc1.weight'], sd[prefix + 'mlp.fc1.bias'] = rnd(h, d), rnd(h)
        sd[prefix + 'mlp.fc2.weight'], sd[prefix + 'mlp.fc2.bias'] = rnd(d, h), rnd(d)

    g_ = img_size // 16
    sd['cls_token'] = rnd(1, 1, embed_dim)
    sd['pos_embed'] = torch.cat([torch.zeros(1, embed_dim), sincos_2d(embed_dim, g_, g_)]).unsqueeze(0)
    sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'] = rnd(embed_dim, 3, 16, 16), rnd(embed_dim)
    for i in range(depth):
        block('blocks.%d.' % i, embed_dim)
    sd['norm.weight'], sd['norm.bias'] = 1 + rnd(embed_dim), rnd(embed_dim)
    sd['mask_token'] = rnd(1, 1, decoder_embed_dim)
    sd['decoder_embed.weight'], sd['decoder_embed.bias'] = rnd(decoder_embed_dim, embed_dim), rnd(decoder_embed_dim)
    sd['decoder_pos_embed'] = torch.cat([torch.zeros(1, decoder_embed_dim),
                                         sincos_2d(decoder_embed_dim, g_, g_)]).unsqueeze(0)
    for i in range(decoder_depth):
        block('decoder_blocks.%d.' % i, decoder_embed_dim)
    sd['decoder_norm.weight'], sd['decoder_norm.bias'] = 1 + rnd(decoder_embed_dim), rnd(decoder_embed_dim)
    sd['decoder_pred.weight'], sd['decoder_pred.bias'] = rnd(16 * 16 * 3, decoder_embed_dim), rnd(16 * 16 * 3)
    return sd
