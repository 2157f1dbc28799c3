package store

import "database/sql"

// Albums lists the albums of an artist.
func Albums(db *sql.DB, artist int64) (*sql.Rows, error) {
	return db.Query(`SELECT AlbumId, Title
		FROM Album
		WHERE ArtistId = ?1
		ORDER BY Title COLLATE NOCASE`, artist)
}

// Rename renames a playlist; "quotes" in a comment are ignored.
func Rename(db *sql.DB, id int64, name string) error {
	_, err := db.Exec("UPDATE Playlist SET Name = $name WHERE PlaylistId = $id", name, id)
	return err
}

var rune1 = '"'
