"""Packaging: the synctalk, unet_328 and pfld packages and the `synctalk` console script."""

from setuptools import find_packages, setup

setup(
    name="synctalk",
    version="0.1.0",
    description="Per-speaker talking-avatar training: preprocess, SyncNet, UNet-328, lip-synced rendering",
    packages=find_packages(include=["synctalk", "synctalk.*", "unet_328", "unet_328.*", "pfld", "pfld.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "onnxruntime>=1.16",
        "onnx>=1.14",
        "transformers>=4.40",
        "python_speech_features>=0.6",
        "scipy>=1.10",  # python_speech_features imports it without declaring it
        "soundfile>=0.12",
        "tqdm>=4.60",
        "rich>=13",
        "imageio-ffmpeg>=0.5",
        "dlib-bin>=19.24",
        "face_recognition_models>=0.3",
        "tensorboard>=2.14",  # per-epoch training metrics as event files in the run folder
    ],
    extras_require={
        # test: the suite's own needs (ctranslate2 for the whisper CTranslate2 test, aiohttp for the server)
        "test": ["pytest>=7", "ctranslate2>=4", "aiohttp>=3.9"],
        "whisper-ct2": ["ctranslate2>=4"],  # --asr_model whisper from faster-whisper/CTranslate2 folders
        "serve": ["aiohttp>=3.9"],  # synctalk serve
    },
    package_data={"synctalk.serve": ["static/*.html", "static/*.js", "static/*.css"]},
    entry_points={"console_scripts": ["synctalk=synctalk.cli:entry"]},
)
