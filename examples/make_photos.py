"""Regenerate examples/photos from scikit-image's public-domain astronaut photo.

    pip install scikit-image && python examples/make_photos.py
"""

from pathlib import Path

from PIL import Image
from skimage import data

OUT = Path(__file__).parent / "photos"
# (left, top, right, bottom) crops of the 512x512 portrait: close-ups and wider shots.
CROPS = [(96, 0, 352, 256), (64, 0, 448, 320), (0, 0, 512, 512), (140, 20, 330, 210)]


def main() -> None:
    OUT.mkdir(exist_ok=True)
    portrait = Image.fromarray(data.astronaut())
    for number, box in enumerate(CROPS, start=1):
        photo = portrait.crop(box)
        if number % 2 == 0:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        photo.thumbnail((256, 256))
        photo.save(OUT / f"shrk ({number}).jpg", quality=88)


if __name__ == "__main__":
    main()
