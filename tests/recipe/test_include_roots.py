"""The site names its recipe directories in the settings; VO recipes extend the site base."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagefactory.errors import RecipeError
from imagefactory.recipe import load_recipe
from imagefactory.settings import load_settings

SITE_BASE = 'name: base\nversion: "1"\nbase: {distro: debian, release: "12"}\nvo: site\n'
VO = 'name: cms-wn\nversion: "1"\nextends: site-base.yaml\nvo: cms\npackages: [less]\n'


def test_a_vo_recipe_extends_the_site_base_from_the_include_roots(tmp_path: Path) -> None:
    site = tmp_path / "site" / "recipes"
    site.mkdir(parents=True)
    (site / "site-base.yaml").write_text(SITE_BASE)
    vo = tmp_path / "vo"
    vo.mkdir()
    (vo / "cms.yaml").write_text(VO)
    with pytest.raises(RecipeError) as info:
        load_recipe(vo / "cms.yaml", load_settings(None).build_limits())
    assert "no such recipe: 'site-base.yaml'" in info.value.render()
    settings_file = tmp_path / "settings.yaml"
    settings_file.write_text("build:\n  include_roots: [site/recipes]\n")
    settings = load_settings(settings_file)
    assert settings.include_roots == (site,)
    recipe = load_recipe(vo / "cms.yaml", settings.build_limits())
    assert recipe.vo == "cms"
    assert recipe.base.version == "12"
    assert (site / "site-base.yaml").resolve() in recipe.sources
