@echo off
REM One person, start to finish: preprocess dataset\NAME\NAME.mp4, train the SyncNet, train the UNet-328.
REM Every step records what it finished in dataset\NAME\.training_state.json and skips finished work,
REM so after any interruption the same command picks up where it stopped.
REM
REM   training_328.bat NAME GPU_ID        (GPU_ID: a CUDA device number, a quoted comma list such as "0,1", or cpu)
REM With a list, both training steps run data-parallel on those GPUs (torchrun, one process per GPU);
REM SYNCTALK_BATCHSIZE / SYNCTALK_SYNCNET_BATCHSIZE are then per GPU.
REM The defaults need no download (mel audio features, dlib landmarks, dlib's face detector when SCRFD
REM is not in the models folder). Epochs, batch sizes and the perceptual loss are passed only when set,
REM so the training commands' own device-dependent defaults apply otherwise.
REM Environment: the same SYNCTALK_* variables as training_328.sh (run it with no arguments for the list).
setlocal EnableExtensions

if "%~1"=="" goto :usage
if "%~2"=="" goto :usage
if not "%~3"=="" goto :usage
set "NAME=%~1"
set "GPU_ID=%~2"

echo(%NAME%| findstr /r /i /x /c:"[0-9a-z][0-9a-z_.-]*" >nul || goto :badname
echo(%NAME%| findstr /c:".." >nul && goto :badname

set "NGPUS=1"
if /i "%GPU_ID%"=="cpu" goto :on_cpu
echo(%GPU_ID%| findstr /r /x /c:"[0-9][0-9,]*" >nul || goto :badgpu
echo(%GPU_ID%| findstr /c:",," >nul && goto :badgpu
set "CUDA_VISIBLE_DEVICES=%GPU_ID%"
set "DEVICE=cuda"
set "NGPUS=0"
for %%G in (%GPU_ID:,= %) do set /a NGPUS+=1
goto :device_set
:on_cpu
set "CUDA_VISIBLE_DEVICES=-1"
set "DEVICE=cpu"
:device_set
REM several GPUs: the training steps start one process per GPU through torchrun (never NVLink multicast)
set "GPUS="
if %NGPUS% GTR 1 set "GPUS=--gpus %NGPUS%"
if %NGPUS% GTR 1 if not defined NCCL_NVLS_ENABLE set "NCCL_NVLS_ENABLE=0"

set "ROOT=%~dp0"
if not defined PYTHON set "PYTHON=python"
if defined SYNCTALK_DATASET_DIR (set "DATASET_DIR=%SYNCTALK_DATASET_DIR%") else (set "DATASET_DIR=dataset")
if defined SYNCTALK_CHECKPOINT_DIR (set "CHECKPOINT_DIR=%SYNCTALK_CHECKPOINT_DIR%") else (set "CHECKPOINT_DIR=checkpoint")
if defined SYNCTALK_ASR (set "ASR=%SYNCTALK_ASR%") else (set "ASR=mel")
if defined SYNCTALK_LANDMARKER (set "LANDMARKER=%SYNCTALK_LANDMARKER%") else (set "LANDMARKER=dlib")
if defined SYNCTALK_DETECTOR (set "DETECTOR=%SYNCTALK_DETECTOR%") else (set "DETECTOR=auto")
REM the width only when set: a typed --width would override the --quick preset's tiny networks
set "WIDTH_OPT="
if defined SYNCTALK_WIDTH set "WIDTH_OPT=--width %SYNCTALK_WIDTH%"
if defined SYNCTALK_MODELS_DIR goto :oldmodels
REM the Python side reads SYNCTALK_MODELS itself; options are passed only when set
set "SYNCNET_OPTS="
set "UNET_OPTS="
if "%SYNCTALK_QUICK%"=="1" set "SYNCNET_OPTS=--quick"
if "%SYNCTALK_QUICK%"=="1" set "UNET_OPTS=--quick"
if defined SYNCTALK_SYNCNET_EPOCHS set "SYNCNET_OPTS=%SYNCNET_OPTS% --epochs %SYNCTALK_SYNCNET_EPOCHS%"
if defined SYNCTALK_SYNCNET_BATCHSIZE set "SYNCNET_OPTS=%SYNCNET_OPTS% --batchsize %SYNCTALK_SYNCNET_BATCHSIZE%"
if defined SYNCTALK_EPOCHS set "UNET_OPTS=%UNET_OPTS% --epochs %SYNCTALK_EPOCHS%"
if defined SYNCTALK_BATCHSIZE set "UNET_OPTS=%UNET_OPTS% --batchsize %SYNCTALK_BATCHSIZE%"
if defined SYNCTALK_PERCEPTUAL set "UNET_OPTS=%UNET_OPTS% --perceptual %SYNCTALK_PERCEPTUAL%"

set "VIDEO=%DATASET_DIR%\%NAME%\%NAME%.mp4"
if not exist "%VIDEO%" goto :novideo

set COMMON=--name "%NAME%" --dataset_dir "%DATASET_DIR%" --checkpoint_dir "%CHECKPOINT_DIR%" --asr %ASR% %WIDTH_OPT% --device %DEVICE%

echo == [1/3] preprocess %VIDEO% (asr %ASR%, landmarker %LANDMARKER%, detector %DETECTOR%, device %DEVICE%)
"%PYTHON%" "%ROOT%scripts\preprocess_data.py" --video_path "%VIDEO%" --name "%NAME%" --dataset_dir "%DATASET_DIR%" --asr_model %ASR% --landmarker %LANDMARKER% --detector %DETECTOR% --device %DEVICE%
if errorlevel 1 exit /b 1

echo == [2/3] SyncNet of %NAME%
if defined SYNCTALK_SYNCNET_CHECKPOINT goto :reuse_syncnet
"%PYTHON%" "%ROOT%scripts\train_328.py" %COMMON% --train_syncnet %SYNCNET_OPTS% %GPUS% %SYNCTALK_EXTRA_TRAIN_ARGS%
if errorlevel 1 exit /b 1
goto :unet
:reuse_syncnet
"%PYTHON%" "%ROOT%scripts\train_328.py" %COMMON% --train_syncnet --syncnet_checkpoint_path "%SYNCTALK_SYNCNET_CHECKPOINT%" %SYNCTALK_EXTRA_TRAIN_ARGS%
if errorlevel 1 exit /b 1

:unet
echo == [3/3] UNet-328 of %NAME%
"%PYTHON%" "%ROOT%scripts\train_328.py" %COMMON% %UNET_OPTS% %GPUS% %SYNCTALK_EXTRA_TRAIN_ARGS%
if errorlevel 1 exit /b 1

echo == done: %NAME% -^> %CHECKPOINT_DIR%\%NAME% (render with: python scripts\inference_328.py --name %NAME% --audio_path SPEECH.wav)
exit /b 0

:oldmodels
echo error: SYNCTALK_MODELS_DIR is no longer read; set SYNCTALK_MODELS=%SYNCTALK_MODELS_DIR% instead 1>&2
exit /b 2

:novideo
echo error: video not found: %VIDEO% (put the person's video there) 1>&2
goto :usage

:badname
echo error: invalid name "%NAME%": use letters, digits, '_', '-' or '.', with no '/' or '..' 1>&2
goto :usage

:badgpu
echo error: GPU_ID must be a device number, a quoted comma list of them ("0,1") or cpu, got "%GPU_ID%" 1>&2
goto :usage

:usage
echo usage: training_328.bat NAME GPU_ID 1>&2
echo   NAME     person name; the video must be dataset\NAME\NAME.mp4 1>&2
echo   GPU_ID   CUDA device number (0, 1, ...), a quoted comma list ("0,1": train on both), or cpu 1>&2
echo environment (defaults in brackets): 1>&2
echo   SYNCTALK_ASR [mel]  SYNCTALK_LANDMARKER [dlib]  SYNCTALK_DETECTOR [auto]  SYNCTALK_QUICK (1: --quick) 1>&2
echo   SYNCTALK_EPOCHS  SYNCTALK_SYNCNET_EPOCHS  SYNCTALK_BATCHSIZE  SYNCTALK_SYNCNET_BATCHSIZE  SYNCTALK_PERCEPTUAL 1>&2
echo     (unset: the training commands' defaults for the device) 1>&2
echo   SYNCTALK_SYNCNET_CHECKPOINT (reuse a SyncNet)  SYNCTALK_WIDTH [training's: full]  SYNCTALK_EXTRA_TRAIN_ARGS 1>&2
echo   SYNCTALK_DATASET_DIR [dataset]  SYNCTALK_CHECKPOINT_DIR [checkpoint]  SYNCTALK_MODELS (models folder)  PYTHON [python] 1>&2
exit /b 2
