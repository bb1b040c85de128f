"""The evaluation prompts: the paper's lists, with and without the identifier."""

from dreambooth_core.evaluation.prompts import evaluation_prompts, paper_templates


def test_the_paper_has_25_prompts_for_each_kind_of_subject():
    assert len(paper_templates(live=True)) == len(paper_templates(live=False)) == 25
    assert "a {subject} in a chef outfit" in paper_templates(live=True)
    assert "a cube shaped {subject}" in paper_templates(live=False)


def test_a_prompt_is_rendered_with_the_identifier_and_judged_without_it():
    first = evaluation_prompts("shrk", "dog", live=True)[0]
    assert (first.generate, first.judge) == ("a shrk dog in the jungle", "a dog in the jungle")


def test_a_short_set_mixes_places_and_changes():
    prompts = [p.judge for p in evaluation_prompts("shrk", "man", live=True, count=4)]
    assert len(prompts) == len(set(prompts)) == 4
    assert any("outfit" in p or "wearing" in p for p in prompts)
    assert any("background" in p or " in the " in p or " on " in p for p in prompts)
