"""Recolour the first frame of 6 held-out clips by hand and carry it through with demo-i2v (a quick check, not yet
bench/quality.py's section): judged colour of the later frames, shape IoU and centroid distance to the source.

Run from the repository root: python bench/first_frame_quick.py"""
import sys, numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from training import judges
from training.world import HELDOUT, COLOURS, BACKGROUNDS, random_spec, make_batch
from vidinvert.models import load_pipeline, wrap
from vidinvert.inversion import invert
from vidinvert.editing import edit, EditConfig
torch.set_num_threads(2)
model = wrap(load_pipeline("demo-i2v"), name="demo-i2v")
rng = np.random.default_rng(7)
ok = total = 0; ious = []; dists = []
for k, (colour, shape, motion) in enumerate(HELDOUT[:6]):
    spec = random_spec(rng, (colour, shape, motion), list(BACKGROUNDS)[k % 3])
    frames, masks, _ = make_batch([spec]); frames, masks = frames[0], masks[0]
    target = [c for c in COLOURS if c != colour][k % 5]
    edited = frames[0].clone()
    m = masks[0] > 0.5
    edited[:, m] = torch.tensor(COLOURS[target]).view(3, 1) * 2 - 1
    lat = model.encode(frames)
    inv = invert(model, lat, steps=50, image=model.encode_image(frames[0], lat.shape[1]), image_hash="x")
    out = edit(model, inv, [""], EditConfig(), first_frames=model.encode_image(edited, lat.shape[1]))
    video = model.decode(out)[0]
    per = [judges.object_colour(video[i:i+1]) == target for i in range(1, video.shape[0])]
    ok += sum(per); total += len(per)
    ious.append(judges.shape_iou(video, frames)); dists.append(judges.centroid_distance(video, frames))
    print(colour, "->", target, sum(per), "/", len(per), "iou %.2f dist %.2f" % (ious[-1], dists[-1]), flush=True)
print(f"later frames in the new colour {ok}/{total} = {ok/total:.0%}, median IoU {np.median(ious):.2f}, median centroid {np.median(dists):.2f} px")
