"""Quick start: the fused op on a packed qkv projection, checked against the reference.

    python examples/quickstart.py
"""
import torch

import tfaa_kernels as tk
from tfaa_kernels import reference

device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = torch.bfloat16 if device == "cuda" else torch.float32
B, F, L, H, D = 2, 8, 32 * 32, 8, 40            # 2 clips of 8 frames, 32x32 latents, 8 heads
qkv = torch.randn(B * F, L, 3 * H * D, device=device, dtype=dtype, requires_grad=True)
q, k, v = qkv.unflatten(-1, (3, H, D)).unbind(2)  # strided views, no copy

out = tk.first_adjacent_attention(q, k, v, num_frames=F)            # backend="auto"
ref = reference.first_adjacent_attention(q.double(), k.double(), v.double(), F)
out.float().square().mean().backward()
err = ((out.double() - ref).norm() / ref.norm()).item()
print(f"device={device} backends={tk.available_backends(device)} out={tuple(out.shape)} "
      f"rel.err vs fp64 reference={err:.2e} grad={tuple(qkv.grad.shape)}")
