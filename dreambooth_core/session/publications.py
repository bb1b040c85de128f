"""published.json: where a session was published (a file of its own, so a publish never races
training's writes of session.json). No token is ever in it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dreambooth_core.errors import SessionError
from dreambooth_core.session.folder import Session
from dreambooth_core.session.paths import PUBLISHED


class Publication(BaseModel):
    """One hub repo, as the last publish to it left it."""

    model_config = ConfigDict(frozen=True)
    repo: str
    url: str
    private: bool
    step: int
    commit: str | None = Field(description="The repo's commit after the publish.")
    files: dict[str, str] = Field(description="Path in the repo -> sha256 of what was published there.")
    published_at: float


class Publications(BaseModel):
    model_config = ConfigDict(frozen=True)
    repos: dict[str, Publication] = Field(default_factory=dict)


def load_publications(session: Session) -> Publications:
    if not session.exists(PUBLISHED):
        return Publications()
    try:
        return Publications.model_validate(session.read_json(PUBLISHED))
    except (ValueError, ValidationError) as exc:
        raise SessionError(f"{session.url}/{PUBLISHED} is damaged ({str(exc).splitlines()[0]}). Delete it: "
                           "the next publish writes it again.") from None


def record_publication(session: Session, publication: Publication) -> None:
    known = load_publications(session)
    repos = known.repos | {publication.repo: publication}
    session.write_json(PUBLISHED, Publications(repos=repos).model_dump(mode="json"))
