"""Track queries of the sample app (Python, sqlite3)."""

import sqlite3

PAGE = 20


def search(conn: sqlite3.Connection, term: str):
    # case-insensitive search: relies on SQLite's LIKE
    return conn.execute(
        "SELECT TrackId, Name FROM Track WHERE Name LIKE ? ORDER BY TrackId LIMIT ?",
        (f"%{term}%", PAGE),
    ).fetchall()


def album_tracks(conn, album_id):
    sql = """
        SELECT t.Name, ifnull(t.Composer, 'unknown') AS Composer, t.Milliseconds / 60000 AS minutes
        FROM Track t
        WHERE t.AlbumId = :album AND t.GenreId = :genre OR t.AlbumId = :album
    """
    return conn.execute(sql, {"album": album_id, "genre": 1}).fetchall()


def save_genre(conn, genre_id, name):
    conn.execute("INSERT OR REPLACE INTO Genre (GenreId, Name) VALUES (?, ?)", (genre_id, name))
    return conn.execute("SELECT last_insert_rowid()").fetchone()[0]


def by_table(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table} WHERE rowid > 0").fetchone()


def not_sql():
    print("Select a file to upload")  # a UI string, not SQL
    return "Update available"
