"""The sd-cpp engine on a real (tiny, random-weight) model: stable-diffusion.cpp loads the
files, encodes the prompt with its Qwen3 text encoder, samples the DiT and decodes with the
VAE. The pixels mean nothing; the formats, sizes, seeds, inputs and residency do.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from sd_fixtures import (
    FAST,
    SIZE,
    GenerateSpy,
    Recorder,
    claim,
    engine_fixture,  # noqa: F401
    image_task,
    run,
    spy_fixture,  # noqa: F401
    tiny_fixture,  # noqa: F401
)

from fixtures.tiny_sd import TinySd, dit_shapes, write_gguf
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError
from studio_worker.domain.tasks import ImageTask, JobOfferClaim, ModelCliDefaults, ModelFile
from studio_worker.engines.image import SdCppEngine
from studio_worker.engines.image_io import output_ext
from studio_worker.engines.sd_params import (
    DEFAULT_CFG,
    DEFAULT_SIDE,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    clean_prompt,
    load_options,
    sample_options,
)

if TYPE_CHECKING:
    from conftest import Served


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def gradient(size: tuple[int, int] = (80, 60)) -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([(x * 3 % 256, y * 4 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    return image


def half_mask(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return mask


# -- pure parameter mapping ---------------------------------------------------------------


def files(*roles: str) -> list[ModelFile]:
    return [ModelFile(role=r, url=f"https://h/{r}", filename=f"{r}.gguf") for r in roles]


def paths(*roles: str, root: Path = Path("/m")) -> dict[str, Path]:
    return {f"{r}.gguf": root / f"{r}.gguf" for r in roles}


ALL_ROLES = ("diffusion-model", "model", "text-encoder", "text-encoder-vision", "vae")


def test_roles_map_to_the_binding_arguments() -> None:
    options = load_options(files(*ALL_ROLES), paths(*ALL_ROLES), ModelCliDefaults())
    assert options.diffusion_model_path == "/m/diffusion-model.gguf"
    assert options.model_path == ""  # a full checkpoint only without a diffusion model
    assert options.llm_path == "/m/text-encoder.gguf"
    assert options.llm_vision_path == "/m/text-encoder-vision.gguf"
    assert options.vae_path == "/m/vae.gguf"
    kwargs = options.kwargs()
    assert kwargs["diffusion_flash_attn"] is True
    assert "loras" not in kwargs
    only_checkpoint = load_options(files("model", "vae"), paths("model", "vae"), ModelCliDefaults())
    assert only_checkpoint.model_path == "/m/model.gguf"
    assert only_checkpoint.diffusion_model_path == ""


def test_load_options_from_cli_defaults() -> None:
    cli = ModelCliDefaults(offload_to_cpu=True, mmap=True, max_vram_gib=6.5, zero_cond_t=True)
    options = load_options(files("diffusion-model"), paths("diffusion-model"), cli, n_threads=3)
    assert options.offload_params_to_cpu is True
    assert options.enable_mmap is True
    assert options.max_vram == 6.5
    assert options.qwen_image_zero_cond_t is True
    assert options.n_threads == 3
    plain = load_options(files("diffusion-model"), paths("diffusion-model"), ModelCliDefaults())
    assert (plain.offload_params_to_cpu, plain.enable_mmap, plain.max_vram) == (False, False, 0.0)
    assert plain.qwen_image_zero_cond_t is False


def test_loras_apply_from_their_folder() -> None:
    source = [
        *files("diffusion-model"),
        *files("lora"),
        ModelFile(role="lora", url="u", filename="b.safetensors"),
    ]
    model_paths = {**paths("diffusion-model", "lora"), "b.safetensors": Path("/m/b.safetensors")}
    options = load_options(source, model_paths, ModelCliDefaults())
    assert options.lora_model_dir == "/m"
    assert options.loras == ("<lora:lora.gguf:1>", "<lora:b.safetensors:1>")
    assert [p.name for p in options.paths][-2:] == ["lora.gguf", "b.safetensors"]


def test_a_missing_role_or_file_is_a_clear_error() -> None:
    with pytest.raises(JobError, match="no diffusion-model / model file") as info:
        load_options(files("text-encoder", "vae"), paths("text-encoder", "vae"), ModelCliDefaults())
    assert info.value.retryable is False
    with pytest.raises(JobError, match=r"vae\.gguf was not provided") as info:
        load_options(files("diffusion-model", "vae"), paths("diffusion-model"), ModelCliDefaults())
    assert info.value.retryable is True


def test_sample_options_task_overrides_win() -> None:
    cli = ModelCliDefaults(
        cfg_scale=4.5, steps=12, width=768, height=640, sampling_method="euler", flow_shift=3.0
    )
    task = ImageTask(
        prompt="p", cfg_scale=2.0, steps=5, width=256, height=128, sampling_method="lcm"
    )
    sample = sample_options(task, cli)
    assert (sample.width, sample.height, sample.steps, sample.cfg_scale) == (256, 128, 5, 2.0)
    assert sample.sample_method == "lcm"
    assert sample.flow_shift == 3.0


def test_sample_options_fall_back_to_cli_defaults_then_built_ins() -> None:
    cli = ModelCliDefaults(cfg_scale=4.5, steps=12, width=768, height=640, sampling_method="euler")
    # steps 20 is the task default ("not chosen"); cfg <= 0 and size 0 are "not set"
    task = ImageTask(prompt="p", cfg_scale=0, steps=20, width=0, height=0)
    sample = sample_options(task, cli)
    assert (sample.width, sample.height, sample.steps, sample.cfg_scale) == (768, 640, 12, 4.5)
    assert sample.sample_method == "euler"
    assert sample.flow_shift is None
    bare = sample_options(task, ModelCliDefaults())
    assert (bare.width, bare.height, bare.steps) == (DEFAULT_SIDE, DEFAULT_SIDE, DEFAULT_STEPS)
    assert bare.cfg_scale == DEFAULT_CFG
    assert bare.sample_method is None


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"width": 8192}, "width 8192 is above"),
        ({"steps": 5000}, "steps 5000 is above"),
        ({"cfgScale": float("inf")}, "cfgScale"),
    ],
)
def test_sample_options_refuse_absurd_values(task: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match=message) as info:
        sample_options(ImageTask.model_validate({"prompt": "p", **task}), ModelCliDefaults())
    assert info.value.retryable is False


def test_output_ext_follows_the_protocol() -> None:
    assert [output_ext(e) for e in ("png", "PNG", "jpg", "jpeg", "bmp", "webp")] == [
        "png",
        "png",
        "jpg",
        "jpg",
        "bmp",
        "webp",
    ]
    assert output_ext("tiff") == output_ext("") == "webp"  # anything else: webp (§5.1)


def test_a_studio_prompt_cannot_name_local_loras() -> None:
    assert clean_prompt("a cat <lora:/etc/passwd:1> on a mat") == "a cat  on a mat"


def test_advertises_sd_cpp_for_image_and_video() -> None:
    assert SdCppEngine().models_per_kind() == {
        TaskKind.IMAGE: ["sd-cpp:*"],
        TaskKind.VIDEO: ["sd-cpp:*"],
    }


# -- the real model -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "fmt", "result_ext"),
    [
        ("png", "PNG", "png"),
        ("webp", "WEBP", "webp"),
        ("jpg", "JPEG", "jpg"),
        ("jpeg", "JPEG", "jpg"),
        ("bmp", "BMP", "bmp"),
        ("tiff", "WEBP", "webp"),
    ],
)
def test_text_to_image_in_each_format(
    engine: SdCppEngine, tiny: TinySd, ext: str, fmt: str, result_ext: str
) -> None:
    result = run(engine, tiny, "image", image_task(ext=ext, width=96))
    assert result.ext == result_ext
    image = Image.open(io.BytesIO(result.data))
    assert image.format == fmt
    assert image.size == (96, SIZE)
    assert image.mode == "RGB"
    assert len(set(image.tobytes())) > 16  # a real picture, not a flat fill


def test_a_size_the_model_cannot_make_is_honoured(engine: SdCppEngine, tiny: TinySd) -> None:
    result = run(engine, tiny, "image", image_task(width=72, height=40))
    assert Image.open(io.BytesIO(result.data)).size == (72, 40)


def test_seed_determinism(engine: SdCppEngine, tiny: TinySd) -> None:
    first = run(engine, tiny, "image", image_task(seed=11))
    again = run(engine, tiny, "image", image_task(seed=11))
    other = run(engine, tiny, "image", image_task(seed=12))
    prompt = run(engine, tiny, "image", image_task(seed=11, prompt="a blue dog"))
    assert first.data == again.data
    assert other.data != first.data
    assert prompt.data != first.data  # the text encoder is really in the loop


def test_no_seed_draws_one_and_logs_it(
    engine: SdCppEngine, tiny: TinySd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="studio_worker.engines.image")
    a = run(engine, tiny, "image", image_task(seed=None))
    b = run(engine, tiny, "image", image_task(seed=None))
    assert a.data != b.data
    assert len([r for r in caplog.records if "(random)" in r.getMessage()]) == 2


def test_options_reach_the_binding(engine: SdCppEngine, tiny: TinySd, spy: GenerateSpy) -> None:
    task = image_task(
        negativePrompt="blurry",
        cfgScale=2.5,
        steps=3,
        samplingMethod="euler_a",
        seed=5,
        width=80,
        height=48,
    )
    run(engine, tiny, "image", task, cli={"steps": 2, "cfgScale": 6, "flowShift": 2.5})
    (call,) = spy.calls
    assert call["prompt"] == "a red cat"
    assert call["negative_prompt"] == "blurry"
    assert (call["cfg_scale"], call["sample_steps"], call["seed"]) == (2.5, 3, 5)
    assert (call["width"], call["height"]) == (80, 48)
    assert call["sample_method"] == "euler_a"
    assert call["flow_shift"] == 2.5
    assert "init_image" not in call and "ref_images" not in call and "mask_image" not in call


def test_cli_defaults_reach_the_binding(
    engine: SdCppEngine, tiny: TinySd, spy: GenerateSpy
) -> None:
    run(
        engine,
        tiny,
        "image",
        image_task(width=0, height=0, steps=20),
        cli={"steps": 3, "cfgScale": 1.5, "width": 48, "height": 32, "samplingMethod": "heun"},
    )
    (call,) = spy.calls
    assert (call["sample_steps"], call["cfg_scale"], call["width"], call["height"]) == (
        3,
        1.5,
        48,
        32,
    )
    assert call["sample_method"] == "heun"


def test_an_unknown_sampler_is_refused(engine: SdCppEngine, tiny: TinySd) -> None:
    with pytest.raises(JobError, match="unknown samplingMethod `warp9`") as info:
        run(engine, tiny, "image", image_task(samplingMethod="warp9"))
    assert info.value.retryable is False


# -- input images -------------------------------------------------------------------------


def test_img2img_from_a_fetched_image(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    # the studio's URL says webp, the bytes are JPEG: the content decides
    url = served.add("/latest.webp", jpeg(gradient()))
    # 4 steps: with 2, stable-diffusion.cpp starts any strength < 1 from pure noise
    plain = run(engine, tiny, "image", image_task(steps=4))
    result = run(
        engine, tiny, "image", image_task(initImageUrl=url + "?sig=1", denoise=0.6, steps=4)
    )
    assert served.hits == ["/latest.webp?sig=1"]
    assert result.data != plain.data
    call = spy.calls[-1]
    assert call["init_image"].size == (80, 60) and call["init_image"].mode == "RGB"
    assert call["strength"] == 0.6
    assert Image.open(io.BytesIO(result.data)).size == (SIZE, SIZE)


def test_img2img_strength_defaults_to_three_quarters(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    url = served.add("/init.png", png(gradient()))
    run(engine, tiny, "image", image_task(initImageUrl=url))
    assert spy.calls[-1]["strength"] == DEFAULT_STRENGTH


def test_mask_with_an_init_image(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    init = served.add("/init.png", png(gradient((SIZE, SIZE))))
    mask = served.add("/mask.png", png(half_mask()))
    result = run(engine, tiny, "image", image_task(initImageUrl=init, maskUrl=mask))
    assert sorted(served.hits) == ["/init.png", "/mask.png"]
    call = spy.calls[-1]
    assert call["mask_image"].mode == "L"
    assert call["init_image"] is not None
    assert Image.open(io.BytesIO(result.data)).size == (SIZE, SIZE)


def test_a_mask_alone_is_not_used(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    mask = served.add("/mask.png", png(half_mask()))
    run(engine, tiny, "image", image_task(maskUrl=mask))
    assert served.hits == []
    assert "mask_image" not in spy.calls[-1]


def test_reference_mode(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    ref = served.add("/ref.png", png(gradient()))
    init = served.add("/init.png", png(gradient()))
    mask = served.add("/mask.png", png(half_mask()))
    plain = run(engine, tiny, "image", image_task())
    result = run(
        engine, tiny, "image", image_task(refImageUrl=ref, initImageUrl=init, maskUrl=mask)
    )
    assert sorted(served.hits) == ["/mask.png", "/ref.png"]  # reference mode: no init image
    call = spy.calls[-1]
    assert [image.size for image in call["ref_images"]] == [(80, 60)]
    assert "init_image" not in call
    assert call["mask_image"].mode == "L"
    assert result.data != plain.data
    assert Image.open(io.BytesIO(result.data)).size == (SIZE, SIZE)


@pytest.mark.parametrize("key", ["initImageUrl", "refImageUrl"])
def test_a_failed_download_fails_the_job_never_text_to_image(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy, key: str
) -> None:
    url = served.add("/gone.png", b"not here", status=404)
    with pytest.raises(JobError, match="-> 404") as info:
        run(engine, tiny, "image", image_task(**{key: url}))
    assert info.value.retryable is True
    assert spy.calls == []


def test_a_failed_mask_download_fails_the_job(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    init = served.add("/init.png", png(gradient()))
    mask = served.add("/mask.png", b"", status=500)
    with pytest.raises(JobError, match="-> 500"):
        run(engine, tiny, "image", image_task(initImageUrl=init, maskUrl=mask))
    assert spy.calls == []


def test_an_undecodable_input_is_terminal(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    url = served.add("/cat.png", b"<html>this is not an image</html>")
    with pytest.raises(JobError, match="could not decode the init image") as info:
        run(engine, tiny, "image", image_task(initImageUrl=url))
    assert info.value.retryable is False
    assert spy.calls == []


def test_an_oversized_input_is_terminal(tiny: TinySd, served: Served) -> None:
    engine = SdCppEngine(max_input_bytes=1000)
    url = served.add("/big.png", os.urandom(5000))
    with pytest.raises(JobError, match="too large") as info:
        run(engine, tiny, "image", image_task(initImageUrl=url))
    assert info.value.retryable is False
    assert engine.loads == 0


def test_an_insecure_input_url_is_refused(engine: SdCppEngine, tiny: TinySd) -> None:
    with pytest.raises(JobError, match="must use https") as info:
        run(engine, tiny, "image", image_task(initImageUrl="http://example.com/a.png"))
    assert info.value.retryable is False


def test_denoise_out_of_range_is_refused(engine: SdCppEngine, tiny: TinySd, served: Served) -> None:
    url = served.add("/init.png", png(gradient()))
    with pytest.raises(JobError, match=r"denoise 1\.5") as info:
        run(engine, tiny, "image", image_task(initImageUrl=url, denoise=1.5))
    assert info.value.retryable is False
    assert served.hits == []


# -- residency, progress, cancel ----------------------------------------------------------


def test_a_preload_loads_the_context_the_next_job_uses(tiny: TinySd) -> None:
    engine = SdCppEngine()
    try:
        assert engine.resident() == []
        paths = {path.name: path for _, path in tiny.files()}
        engine.preload(claim(tiny, "image", image_task()).model_source, paths)
        assert engine.loads == 1
        assert engine.resident() == sorted(str(path) for path in paths.values())
        run(engine, tiny, "image", image_task())
        assert engine.loads == 1  # the same load key as the job's
        engine.unload()
        assert engine.resident() == []
    finally:
        engine.unload()


def test_the_context_stays_resident(tiny: TinySd) -> None:
    engine = SdCppEngine()
    try:
        run(engine, tiny, "image", image_task())
        first = engine.loaded
        run(engine, tiny, "image", image_task(seed=2, ext="webp"))
        assert engine.loads == 1 and engine.loaded is first  # same files and options
        run(engine, tiny, "video", {"prompt": "p", "width": 32, "height": 32, "seconds": 0.125})
        assert engine.loads == 1  # video jobs share the context
        run(engine, tiny, "image", image_task(), cli={**FAST, "mmap": True})
        assert engine.loads == 2  # a load option changed
        assert engine.loaded is not None and engine.loaded.enable_mmap is True
        engine.unload()
        assert engine.loaded is None
        run(engine, tiny, "image", image_task(), cli={**FAST, "mmap": True})
        assert engine.loads == 3
    finally:
        engine.unload()


def test_progress_per_step(engine: SdCppEngine, tiny: TinySd) -> None:
    progress = Recorder()
    run(engine, tiny, "image", image_task(steps=4), progress=progress)
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and progress.notes[-1] == "done"
    assert "step 1/4" in progress.notes and "step 4/4" in progress.notes


def test_cancel_before_the_job(tiny: TinySd) -> None:
    engine = SdCppEngine()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobError, match="cancelled") as info:
        run(engine, tiny, "image", image_task(), cancel=cancel)
    assert info.value.retryable is True
    assert engine.loads == 0


def test_cancel_during_generation_discards_the_result(engine: SdCppEngine, tiny: TinySd) -> None:
    cancel = threading.Event()
    progress = Recorder(cancel_on="step 1/", cancel=cancel)
    with pytest.raises(JobError, match="cancelled"):
        run(engine, tiny, "image", image_task(steps=3), progress=progress, cancel=cancel)
    assert "done" not in progress.notes
    # the engine is fine afterwards
    assert Image.open(io.BytesIO(run(engine, tiny, "image", image_task()).data)).size == (
        SIZE,
        SIZE,
    )


# -- refusals and failures ----------------------------------------------------------------


def test_other_task_kinds_are_refused(engine: SdCppEngine, tiny: TinySd) -> None:
    offer = claim(tiny, "llm", {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(CannotServe, match="sdcpp engine cannot serve llm tasks"):
        engine.run(offer, {}, Recorder(), threading.Event())


def test_missing_role_fails_before_native_code(tiny: TinySd) -> None:
    engine = SdCppEngine()
    offer = JobOfferClaim.model_validate(
        {
            **claim(tiny, "image", image_task()).model_dump(by_alias=True),
            "modelSource": {
                "engine": "sd-cpp",
                "files": [{"role": "vae", "url": "https://h/v", "filename": tiny.vae.name}],
            },
        }
    )
    with pytest.raises(JobError, match="modelSource has no diffusion-model / model file") as info:
        engine.run(offer, {tiny.vae.name: tiny.vae}, Recorder(), threading.Event())
    assert info.value.retryable is False
    assert engine.loads == 0


def test_a_model_the_library_refuses_is_a_clear_error(tiny: TinySd, tmp_path: Path) -> None:
    shapes = dit_shapes()
    del shapes["final_layer.linear.weight"]
    broken = write_gguf(tmp_path / tiny.dit.name, shapes, seed=1, arch="ovis-dit")
    engine = SdCppEngine()
    model_paths = {path.name: path for _, path in tiny.files()} | {broken.name: broken}
    with pytest.raises(JobError, match=r"could not load model .*final_layer\.linear\.weight"):
        engine.run(claim(tiny, "image", image_task()), model_paths, Recorder(), threading.Event())
    assert engine.loads == 0 and engine.loaded is None
    result = run(engine, tiny, "image", image_task())  # the good files still load
    assert engine.loads == 1 and result.ext == "png"
    engine.unload()
