"""What a file is and when it was made: ExifTool, the in-process JPEG reader, date choice."""
