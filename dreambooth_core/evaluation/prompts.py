"""The prompt set an evaluation renders: the DreamBooth paper's recontextualisation prompts.

The paper uses one list for objects and one for live subjects (people, pets): the same
places, plus property changes for objects and outfits for live subjects. Each prompt
is rendered with the identifier, to generate, and judged (CLIP-T) without it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

PLACES = [
    "a {subject} in the jungle", "a {subject} in the snow", "a {subject} on the beach",
    "a {subject} on a cobblestone street", "a {subject} on top of pink fabric",
    "a {subject} on top of a wooden floor", "a {subject} with a city in the background",
    "a {subject} with a mountain in the background", "a {subject} with a blue house in the background",
    "a {subject} on top of a purple rug in a forest", "a {subject} with a wheat field in the background",
    "a {subject} with a tree and autumn leaves in the background",
    "a {subject} with the Eiffel Tower in the background", "a {subject} floating on top of water",
    "a {subject} floating in an ocean of milk", "a {subject} on top of green grass with sunflowers around it",
    "a {subject} on top of a mirror", "a {subject} on top of the sidewalk in a crowded street",
    "a {subject} on top of a dirt road", "a {subject} on top of a white rug",
]
OBJECT_CHANGES = ["a red {subject}", "a purple {subject}", "a shiny {subject}", "a wet {subject}",
                  "a cube shaped {subject}"]
LIVE_CHANGES = ["a {subject} wearing a red hat", "a {subject} wearing a santa hat",
                "a {subject} wearing a rainbow scarf", "a {subject} wearing a black top hat and a monocle",
                "a {subject} in a chef outfit", "a {subject} in a firefighter outfit",
                "a {subject} in a police outfit", "a {subject} wearing pink glasses",
                "a {subject} wearing a yellow shirt", "a {subject} in a purple wizard outfit"]


class EvaluationPrompt(BaseModel):
    model_config = ConfigDict(frozen=True)
    generate: str  # with the identifier: "a shrk dog in the snow"
    judge: str  # what CLIP-T compares the image with: "a dog in the snow"


def paper_templates(live: bool) -> list[str]:
    """The paper's 25 prompts for a live subject (people, pets) or an object."""
    return PLACES[:15] + LIVE_CHANGES if live else PLACES + OBJECT_CHANGES


def evaluation_prompts(token: str, class_word: str, live: bool,
                       count: int | None = None) -> list[EvaluationPrompt]:
    """The first `count` (default all) prompts for one subject, spread over the list so a
    short set still mixes places and changes."""
    templates = paper_templates(live)
    if count is not None and 0 < count < len(templates):
        templates = [templates[i * len(templates) // count] for i in range(count)]
    return [EvaluationPrompt(generate=t.format(subject=f"{token} {class_word}"),
                             judge=t.format(subject=class_word)) for t in templates]


LIVE_CLASSES = {"person", "man", "woman", "boy", "girl", "child", "baby", "dog", "cat", "puppy", "kitten",
                "horse", "bird", "rabbit"}


def is_live(class_word: str | None, subject_type: str = "auto") -> bool:
    """People and animals get the outfit prompts; anything else the object ones."""
    if subject_type != "auto":
        return subject_type == "person"
    return (class_word or "").strip().lower() in LIVE_CLASSES
