<?php
// Employee directory (PHP, PDO). # and /* */ comments hold no SQL.
function managers(PDO $db) {
    $stmt = $db->prepare('SELECT EmployeeId, LastName FROM Employee WHERE ReportsTo IS NULL AND Title LIKE :title');
    return $stmt->execute([':title' => '%manager%']);
}

function hired(PDO $db, $year) {
    $sql = <<<SQL
        SELECT EmployeeId, substr(LastName, -3) AS tail
        FROM Employee
        WHERE strftime('%Y', HireDate) = :year
        SQL;
    return $db->prepare($sql)->execute([':year' => $year]);
}
