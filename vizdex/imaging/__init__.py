"""The image door: every image vizdex reads (upload, file, URL) passes through here.

Decode under limits, sniff and register formats, apply EXIF, convert to RGB, fetch URLs behind an
SSRF guard, and keep file paths inside the allowed roots. Torch-free: encoders and the web use it.
"""
