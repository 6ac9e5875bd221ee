"""SkyScript: Google Earth Engine images paired with OpenStreetMap-derived captions and lon/lat boxes."""
