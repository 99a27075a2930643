"""Checkpoints and weights: conversion to and from PyTorch, model directories, the torch-free
readers of .pt/.pth/TorchScript files and their safe unpickler, and downloads."""
