"""What a file is and when it was made: ExifTool, the in-process JPEG reader, the Reader that
joins them with the date rules. It only reads files (staged copies, or library files for
adopt and repair) and never changes one.
"""
