"""Story link tokens: issue, variant and story, signed; nothing else."""

from __future__ import annotations

from digest.story_links import StoryRef, make_signer, read_token


def test_tokens_name_only_issue_variant_and_story() -> None:
    signer = make_signer("k")
    for run_id in ("0123456789abcdef", "test-run_1"):
        token = signer.sign(f"{run_id}-3f-12").decode()
        assert read_token(signer, token) == StoryRef(run_id, "3f", 12)
    assert read_token(make_signer("other key"), signer.sign("r-1-2").decode()) is None
    assert read_token(signer, signer.sign("r-1-../x").decode()) is None  # signed, but not a story
